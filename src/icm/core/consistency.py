"""Logical consistency between pairs of claims, and I(D): the number of violating pairs.

Rules compare the `key` of two examples of the same group. They never look at gold labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .data import Example

Assignment = tuple[int, int]
SAME: tuple[Assignment, ...] = ((0, 0), (1, 1))
NOT_BOTH_TRUE: tuple[Assignment, ...] = ((0, 0), (0, 1), (1, 0))
EXACTLY_ONE: tuple[Assignment, ...] = ((0, 1), (1, 0))

RULES = ("none", "same-answer", "asymmetry", "equivalence")
"""
none:        no constraint (the TruthfulQA default).
same-answer: same key -> same label; different keys -> not both True (GSM8K final answers).
asymmetry:   key is an ordered pair (a, b); (a, b) and (b, a) -> exactly one True;
             equal pairs -> same label.
equivalence: same key -> same label; nothing said about different keys.
"""


def allowed(rule: str, a: Example, b: Example) -> tuple[Assignment, ...] | None:
    """Label pairs that keep `a` and `b` consistent, or None when the rule says nothing."""
    if rule == "none" or a.group != b.group or a.key is None or b.key is None:
        return None
    if rule == "same-answer":
        return SAME if a.key == b.key else NOT_BOTH_TRUE
    if rule == "equivalence":
        return SAME if a.key == b.key else None
    if rule == "asymmetry":
        if a.key == b.key:
            return SAME
        first, second = a.key  # type: ignore[misc]
        return EXACTLY_ONE if (second, first) == b.key else None
    raise ValueError(f"unknown consistency rule {rule!r}; choose one of {', '.join(RULES)}")


@dataclass(frozen=True)
class Constraint:
    i: int
    j: int
    allowed: tuple[Assignment, ...]

    def violated(self, labels: Sequence[int]) -> bool:
        yi, yj = labels[self.i], labels[self.j]
        return yi >= 0 and yj >= 0 and (yi, yj) not in self.allowed


def constraints(rule: str, examples: Sequence[Example]) -> list[Constraint]:
    """Every constrained pair i < j of the data set (pairs only form inside a group)."""
    if rule not in RULES:
        raise ValueError(f"unknown consistency rule {rule!r}; choose one of {', '.join(RULES)}")
    groups: dict[object, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.group is not None:
            groups[ex.group].append(i)
    out = []
    for members in groups.values():
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                ok = allowed(rule, examples[i], examples[j])
                if ok is not None:
                    out.append(Constraint(i, j, ok))
    return out


def violations(cons: Sequence[Constraint], labels: Sequence[int]) -> list[Constraint]:
    """The constraints the labelling breaks; unlabelled examples (label -1) break none."""
    return [c for c in cons if c.violated(labels)]


def repair(
    labels: list[int],
    margin: Sequence[float],
    cons: Sequence[Constraint],
    fixed: Sequence[bool],
) -> list[int]:
    """Resolve each broken pair by the assignment the rule allows that keeps `fixed` labels and
    agrees best with the signed margins (log-odds: > 0 leans True), weakest labels first."""
    labels = list(labels)
    for _ in range(len(cons) + 1):
        bad = [c for c in violations(cons, labels) if not (fixed[c.i] and fixed[c.j])]
        if not bad:
            break
        c = min(bad, key=lambda c: abs(margin[c.i]) + abs(margin[c.j]))
        options = [
            (a, b)
            for a, b in c.allowed
            if (not fixed[c.i] or a == labels[c.i]) and (not fixed[c.j] or b == labels[c.j])
        ]

        def fit(ab: tuple[int, int], c: Constraint = c) -> float:
            return (2 * ab[0] - 1) * margin[c.i] + (2 * ab[1] - 1) * margin[c.j]

        labels[c.i], labels[c.j] = max(options, key=fit)
    return labels
