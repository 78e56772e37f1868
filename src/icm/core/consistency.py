"""Logical consistency between pairs of claims, and I(D): the number of violating pairs.

Rules compare the `key` of two examples of the same group. They never look at gold labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .data import Example

if TYPE_CHECKING:
    import numpy as np

Assignment = tuple[int, int]
SAME: tuple[Assignment, ...] = ((0, 0), (1, 1))
NOT_BOTH_TRUE: tuple[Assignment, ...] = ((0, 0), (0, 1), (1, 0))
EXACTLY_ONE: tuple[Assignment, ...] = ((0, 1), (1, 0))


@dataclass(frozen=True)
class Rule:
    """A consistency rule: the label pairs two claims of one group may take, from their keys.

    A new rule is one entry of `RULES`: what it allows when the keys are equal, when they
    differ, and (for a rule over ordered pairs, `pair_key`) when one key is the other reversed;
    None says nothing about such a pair."""

    name: str
    help: str
    same: tuple[Assignment, ...] | None = None
    different: tuple[Assignment, ...] | None = None
    reversed: tuple[Assignment, ...] | None = None
    pair_key: bool = False
    """The key is an ordered pair of two fields (a comparison of two responses)."""

    @property
    def constrains(self) -> bool:
        """Whether the rule ever relates two claims (it then needs a group and a key)."""
        return any(x is not None for x in (self.same, self.different, self.reversed))

    def allowed(self, a: Example, b: Example) -> tuple[Assignment, ...] | None:
        """Label pairs that keep `a` and `b` consistent, or None when the rule says nothing."""
        if not self.constrains or a.group != b.group or a.key is None or b.key is None:
            return None
        if a.key == b.key:
            return self.same
        if self.pair_key:
            first, second = cast("tuple[Hashable, Hashable]", a.key)
            if (second, first) == b.key:
                return self.reversed
            return None
        return self.different


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("none", "no constraint (the TruthfulQA default)"),
        Rule(
            "same-answer",
            "same key -> same label; different keys -> not both True (GSM8K final answers)",
            same=SAME,
            different=NOT_BOTH_TRUE,
        ),
        Rule(
            "asymmetry",
            "key is an ordered pair (a, b): (a, b) and (b, a) -> exactly one True; equal pairs "
            "-> same label",
            same=SAME,
            reversed=EXACTLY_ONE,
            pair_key=True,
        ),
        Rule(
            "equivalence",
            "same key -> same label; nothing said about different keys",
            same=SAME,
        ),
    )
}
"""Every rule by name."""


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise ValueError(f"unknown consistency rule {name!r}; choose one of {', '.join(RULES)}")
    return RULES[name]


def allowed(rule: str, a: Example, b: Example) -> tuple[Assignment, ...] | None:
    """Label pairs that keep `a` and `b` consistent under the rule named `rule`."""
    return get_rule(rule).allowed(a, b)


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
    check = get_rule(rule)
    groups: dict[object, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex.group is not None:
            groups[ex.group].append(i)
    out = []
    for members in groups.values():
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                ok = check.allowed(examples[i], examples[j])
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


# -- the constraint graph: moves that keep a labelling consistent, and exact decoding ------------
ENUMERATION_LIMIT = 4096
"""Consistent assignments enumerated per component at most; beyond, decoding is greedy."""


class Structure:
    """The constraints of one data set as a graph over its examples.

    `move(labels, i, y)` sets example i to y and changes whatever the rule then forces (unit
    propagation: with one label pinned, every rule here allows one label for a broken partner),
    so a consistent labelling stays consistent. `decode(margin)` is the consistent labelling that
    agrees best with signed margins (log-odds), exact per connected component. `fixed` labels (a
    person's) never change."""

    def __init__(
        self, cons: Sequence[Constraint], n: int, fixed: dict[int, int] | None = None
    ) -> None:
        self.n, self.cons, self.fixed = n, list(cons), dict(fixed or {})
        self.edges: list[list[tuple[int, Constraint]]] = [[] for _ in range(n)]
        for c in self.cons:
            self.edges[c.i].append((c.j, c))
            self.edges[c.j].append((c.i, c))
        self.components = self._components()

    def _components(self) -> list[list[int]]:
        seen, out = [False] * self.n, []
        for start in range(self.n):
            if seen[start]:
                continue
            seen[start], stack, comp = True, [start], []
            while stack:
                i = stack.pop()
                comp.append(i)
                for j, _ in self.edges[i]:
                    if not seen[j]:
                        seen[j] = True
                        stack.append(j)
            out.append(sorted(comp))
        return out

    @staticmethod
    def _ok(c: Constraint, i: int, yi: int, yj: int) -> bool:
        return ((yi, yj) if i == c.i else (yj, yi)) in c.allowed

    def move(self, labels: Sequence[int], i: int, y: int) -> list[int] | None:
        """`labels` with example i set to y and the labels the rule forces changed with it; None
        when that would change a fixed label or cannot be made consistent."""
        if self.fixed.get(i, y) != y:
            return None
        out, pinned, todo = list(labels), {i}, [i]
        out[i] = y
        while todo:
            a = todo.pop()
            for b, c in self.edges[a]:
                if out[b] < 0 or self._ok(c, a, out[a], out[b]):
                    continue
                forced = [v for v in (0, 1) if self._ok(c, a, out[a], v)]
                if b in pinned or b in self.fixed or len(forced) != 1:
                    return None
                out[b] = forced[0]
                pinned.add(b)
                todo.append(b)
        return out

    def assignments(
        self, comp: Sequence[int], pinned: dict[int, int], limit: int = ENUMERATION_LIMIT
    ) -> list[list[int]]:
        """Every consistent labelling of the component's members that keeps `pinned` and the
        fixed labels, in member order; [] when there is none or more than `limit`."""
        where = {i: k for k, i in enumerate(comp)}
        out: list[list[int]] = []
        current = [-1] * len(comp)

        def extend(k: int) -> bool:
            if k == len(comp):
                out.append(list(current))
                return len(out) <= limit
            i = comp[k]
            for v in (0, 1):
                if pinned.get(i, self.fixed.get(i, v)) != v:
                    continue
                earlier = (where[j] < k for j, _ in self.edges[i])
                if all(
                    not before or self._ok(c, i, v, current[where[j]])
                    for before, (j, c) in zip(earlier, self.edges[i], strict=True)
                ):
                    current[k] = v
                    if not extend(k + 1):
                        return False
            current[k] = -1
            return True

        return out if extend(0) else []

    def decode(
        self, margin: Sequence[float] | np.ndarray, keep: Sequence[int] | None = None
    ) -> list[int]:
        """The consistent labelling that maximises the sum of signed margins (> 0 leans True).

        `keep`: labels that stay as they are (>= 0), -1 where free; the free examples are
        decided given them. A component with no consistent assignment, or more than the limit,
        is decided greedily, its most certain examples first."""
        out = list(keep) if keep is not None else [-1] * self.n
        for i, y in self.fixed.items():
            out[i] = y
        pinned = {i: y for i, y in enumerate(out) if y >= 0}
        for comp in self.components:
            options = self.assignments(comp, pinned)
            if options:

                def fit(a: list[int], comp: list[int] = comp) -> float:
                    return _fit(a, comp, margin)

                best = max(options, key=fit)
                for i, v in zip(comp, best, strict=True):
                    out[i] = v
            else:
                self._greedy(comp, out, margin)
        return out

    def _greedy(
        self, comp: Sequence[int], out: list[int], margin: Sequence[float] | np.ndarray
    ) -> None:
        kept = [(i, out[i]) for i in comp if out[i] >= 0]

        def uncertainty(i: int) -> float:
            return -abs(margin[i])

        for i in sorted(comp, key=uncertainty):
            if out[i] >= 0:
                continue
            y = int(margin[i] > 0)
            moves = [self.move(out, i, y), self.move(out, i, 1 - y)]
            ok = [m for m in moves if m is not None and all(m[j] == v for j, v in kept)]
            if ok:
                out[:] = ok[0]
            else:  # no consistent choice is left: the model's own label
                out[i] = y
            kept.append((i, out[i]))


def _fit(
    assignment: Sequence[int], comp: Sequence[int], margin: Sequence[float] | np.ndarray
) -> float:
    return sum((2 * v - 1) * margin[i] for i, v in zip(comp, assignment, strict=True))
