"""U(D) = α·P(D) − I(D), the objective Algorithms 1 and 2 maximise, and the model's predictions
they ask for: each labelling scored once (a memo), several at once where the model takes calls
in parallel, averaged over demonstration orders when asked."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .consistency import Constraint, violations
from .data import Example
from .model import LabelModel, carry_meters
from .score import predictability, utility


@dataclass
class Evaluation:
    """U of one labelling, with its parts."""

    utility: float
    predictability: float
    inconsistencies: int
    terms: np.ndarray  # (n_labelled, 2), rows in data-set order of the labelled examples


class Objective:
    """U of labellings of `examples` under `model` and the constraints `cons`.

    The labelled set D is always taken in data-set order (or, with several `ranks`, in each
    order in turn, the terms averaged), so the same labelling always makes the same prompts."""

    def __init__(
        self,
        examples: Sequence[Example],
        model: LabelModel,
        cons: list[Constraint],
        score: str,
        alpha: float,
        memo_size: int,
    ) -> None:
        self.examples, self.model, self.cons = list(examples), model, cons
        self.score, self.alpha, self.memo_size = score, alpha, memo_size
        self.ranks = self.orders_of(len(self.examples), 1)
        self._memo: OrderedDict[tuple, Evaluation] = OrderedDict()

    @staticmethod
    def orders_of(n: int, orders: int) -> list[list[float]]:
        """Each order as a rank per example: the data-set order first (the paper's), then
        fixed random orders (the same for every seed and chain: they define U, not the search)."""
        ranks = [[float(i) for i in range(n)]]
        for r in range(1, orders):
            ranks.append([float(x) for x in np.random.default_rng([n, r]).permutation(n)])
        return ranks

    def reordered(self, r: int) -> Objective:
        """The same objective under order `r` alone, with a memo of its own."""
        other = Objective(self.examples, self.model, self.cons, self.score, self.alpha, 0)
        other.memo_size = self.memo_size
        other.ranks = [self.orders_of(len(self.examples), r + 1)[r]]
        return other

    @staticmethod
    def _key(labels: Sequence[int]) -> tuple:
        return tuple((i, y) for i, y in enumerate(labels) if y >= 0)

    def _terms(self, labels: Sequence[int]) -> np.ndarray:
        idx = [i for i, y in enumerate(labels) if y >= 0]
        if not idx:
            return np.zeros((0, 2))
        out = np.zeros((len(idx), 2))
        for rank in self.ranks:
            order = sorted(range(len(idx)), key=lambda k: rank[idx[k]])
            terms = self.model.loo_logprobs(
                [self.examples[idx[k]].prompt for k in order], [labels[idx[k]] for k in order]
            )
            out[order] += terms
        return out / len(self.ranks)

    def query(self, labels: Sequence[int], queries: Sequence[int]) -> np.ndarray:
        """[log P(False), log P(True)] of each example in `queries` after every labelled one
        that is not queried (no query sees its own label, or another's), averaged over the
        demonstration orders."""
        out = np.zeros((len(queries), 2))
        if not len(queries):
            return out
        ask = [self.examples[q].prompt for q in queries]
        asked = set(queries)
        for rank in self.ranks:
            labelled = (i for i, y in enumerate(labels) if y >= 0 and i not in asked)
            idx = sorted(labelled, key=lambda i: rank[i])
            demos = [self.examples[i].prompt for i in idx]
            out += self.model.query_logprobs(demos, [labels[i] for i in idx], ask)
        return out / len(self.ranks)

    def evaluate(self, labels: Sequence[int], terms: np.ndarray | None = None) -> Evaluation:
        """U of a labelling; a labelling already scored is not scored again."""
        key = self._key(labels)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        ys = [y for y in labels if y >= 0]
        terms = self._terms(labels) if terms is None else terms
        p = predictability(terms, ys, self.score)
        bad = len(violations(self.cons, labels))
        ev = Evaluation(utility(p, bad, self.alpha), p, bad, terms)
        self._memo[key] = ev
        if len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        return ev

    def evaluate_all(
        self,
        candidates: Sequence[Sequence[int]],
        scored_so_far: Callable[[int, int], None] | None = None,
    ) -> list[Evaluation]:
        """U of several labellings. Those not scored yet are scored at once when the model can
        take several calls at once (its `parallel`, e.g. a server's streams): the
        result is the same as one after the other. `scored_so_far(done, total)` hears of each
        labelling as its U is known."""
        todo = list(
            {self._key(c): c for c in candidates if self._key(c) not in self._memo}.values()
        )
        parallel = self.model.parallel
        if parallel > 1 and len(todo) > 1:
            with ThreadPoolExecutor(min(parallel, len(todo))) as pool:
                terms = list(pool.map(carry_meters(self._terms), todo))
            for cand, t in zip(todo, terms, strict=True):
                self.evaluate(cand, t)
        out = []
        for c in candidates:
            out.append(self.evaluate(c))
            if scored_so_far is not None:
                scored_so_far(len(out), len(candidates))
        return out

    def final_terms(self, labels: Sequence[int]) -> np.ndarray:
        """[log P(False), log P(True)] for every example: labelled ones leave-one-out, the rest
        given the whole labelled set."""
        out = np.zeros((len(labels), 2))
        idx = [i for i, y in enumerate(labels) if y >= 0]
        if idx:
            out[idx] = self.evaluate(labels).terms
        rest = [i for i, y in enumerate(labels) if y < 0]
        if rest:
            out[rest] = self.query(labels, rest)
        return out
