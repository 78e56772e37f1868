"""The end of a search: complete the labelling, make it obey the rule exactly, then polish it.

Annealing ends wherever its last accepted move left it, possibly with examples it never reached
or pairs that break the rule (Algorithm 1 treats the rule as a penalty). `settle` turns that
into a labelling of every example that obeys the rule and that no single move improves:

1. keep-best: go back to the best consistent, complete labelling visited, if it beats the last;
2. complete: each unlabelled example gets its argmax given the labelled set, decided under the
   rule with the labelled ones kept;
3. repair: each component (examples the rule links) that breaks the rule gets the consistent
   assignment of highest U, the rest of the labelling as it is;
4. polish: flip one example and whatever the rule then forces (a whole group, for a pair or a
   same-answer group) while one such move raises U. Moves of the examples the model disagrees
   with most are tried first; the first that raises U is applied, so a pass that finds nothing
   certifies a local maximum.

Each step is deterministic given the state, so a search killed while settling and resumed from
its last checkpoint ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .consistency import violations
from .search import Evaluation, Search, State

REPAIR_OPTIONS = 16
"""Consistent assignments of one broken component scored by the repair: the nearest ones."""
EPS = 1e-9
"""A move must raise U by more than this (float noise is not an improvement)."""


@dataclass
class Change:
    """One step of settling: what it did, the examples it changed, and U after it."""

    kind: str  # "best", "complete", "repair" or "move"
    changed: list[int]
    utility: float
    inconsistencies: int


def settle(search: Search, state: State) -> Iterator[Change]:
    """Steps 1-4 above on `state`, in place; yields after each change (checkpoint there)."""
    cfg = search.cfg
    if state.polish_moves < 0:
        return
    jump = state.best_complete > state.utility or state.inconsistencies
    if cfg.keep_best and state.polish_moves == 0 and state.best_labels is not None and jump:
        yield _apply(search, state, state.best_labels, "best")
    if not cfg.polish:
        return
    if any(y < 0 for y in state.labels):
        yield _apply(search, state, complete(search, state.labels), "complete")
    for labels in repair(search, state.labels):
        yield _apply(search, state, labels, "repair")
    while (better := improve(search, state.labels)) is not None:
        state.polish_moves += 1
        yield _apply(search, state, better, "move")
    state.polish_moves = -1


def _apply(search: Search, state: State, labels: list[int], kind: str) -> Change:
    ev = search.evaluate(labels)
    changed = [i for i, (a, b) in enumerate(zip(state.labels, labels, strict=True)) if a != b]
    state.labels, state.utility, state.inconsistencies = (
        list(labels),
        ev.utility,
        ev.inconsistencies,
    )
    complete_ = all(y >= 0 for y in labels)
    state.visit(state.labels, state.utility, complete_ and ev.inconsistencies == 0)
    return Change(kind, changed, ev.utility, ev.inconsistencies)


def complete(search: Search, labels: Sequence[int]) -> list[int]:
    """Unlabelled examples labelled by their argmax given the labelled set, under the rule."""
    rest = [i for i, y in enumerate(labels) if y < 0]
    lp = search.query(labels, rest)
    margin = np.zeros(len(labels))
    margin[rest] = lp[:, 1] - lp[:, 0]
    return search.structure.decode(margin, keep=labels)


def repair(search: Search, labels: Sequence[int]) -> Iterator[list[int]]:
    """For each component that breaks the rule, the labelling with that component set to its
    consistent assignment of highest U (among the nearest few), one component at a time."""
    labels = list(labels)
    for comp in search.structure.components:
        members = set(comp)
        if not any(c.i in members for c in violations(search.cons, labels)):
            continue
        options = search.structure.assignments(comp, {})
        options.sort(key=lambda a: sum(labels[i] != v for i, v in zip(comp, a, strict=True)))
        candidates = []
        for a in options[:REPAIR_OPTIONS]:
            cand = list(labels)
            for i, v in zip(comp, a, strict=True):
                cand[i] = v
            candidates.append(cand)
        if not candidates:
            continue  # a person's labels break the rule here: nothing can mend it
        scored = search.evaluate_all(candidates)
        best = max(range(len(candidates)), key=lambda k: scored[k].utility)
        labels = candidates[best]
        yield labels


def improve(search: Search, labels: Sequence[int]) -> list[int] | None:
    """The first move (in order of how strongly the model disagrees with the label) that raises
    U, or None when none does. Moves go to the model in rounds as large as it takes at once."""
    current = search.evaluate(labels)
    seen = {tuple(labels)}
    moves = []
    for i in _unhappy_first(current, labels):
        moved = search.structure.move(labels, i, 1 - labels[i])
        if moved is not None and tuple(moved) not in seen:
            seen.add(tuple(moved))
            moves.append(moved)
    width = max(1, search.width)
    for start in range(0, len(moves), width):
        chunk = moves[start : start + width]
        for cand, ev in zip(chunk, search.evaluate_all(chunk), strict=True):
            if ev.utility > current.utility + EPS:
                return cand
    return None


def _unhappy_first(ev: Evaluation, labels: Sequence[int]) -> list[int]:
    """Examples by their signed leave-one-out log-odds, lowest first; fixed ones left out."""
    y = np.asarray(labels)
    rows = np.arange(len(y))
    signed = ev.terms[rows, y] - ev.terms[rows, 1 - y]
    return [int(i) for i in np.argsort(signed, kind="stable")]
