"""Algorithm 1 (simulated-annealing search) and Algorithm 2 (ConsistencyFix) of the ICM paper.

The state is a label per example: -1 (unlabelled), 0 (False) or 1 (True). The labelled set D is
always taken in data-set order, so the same labelling always makes the same prompts.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .consistency import Constraint, constraints, violations
from .data import Example
from .model import LabelModel, carry_meters
from .score import SCORES, predictability, utility

CLOCKS = ("iteration", "accepted")


@dataclass
class SearchConfig:
    """The constants of Algorithms 1 and 2. Field metadata: the CLI help and the allowed range."""

    alpha: float = field(
        default=5.0,
        metadata={"help": "weight of mutual predictability in U (the paper: 50)", "above": 0},
    )
    t0: float = field(default=10.0, metadata={"help": "initial temperature T0", "above": 0})
    tmin: float = field(default=0.01, metadata={"help": "final temperature Tmin", "above": 0})
    beta: float = field(
        default=0.99, metadata={"help": "cooling rate: T = T0 / (1 + beta log n)", "min": 0}
    )
    initial: int = field(
        default=8, metadata={"help": "K random (balanced) initial labels", "min": 0}
    )
    fix_steps: int = field(
        default=10, metadata={"help": "M: ConsistencyFix rounds per step", "min": 0}
    )
    group_weight: float = field(
        default=100.0,
        metadata={
            "help": "sampling weight of unlabelled examples sharing a group with a labelled one",
            "above": 0,
        },
    )
    score: str = field(
        default="mean-logodds",
        metadata={
            "help": "mean-logodds (official code; keeps the labelled set growing) or "
            "sum-logprob (the paper's formula)",
            "choices": SCORES,
        },
    )
    clock: str = field(
        default="iteration",
        metadata={
            "help": "n in the schedule: 'iteration' (paper) or 'accepted' (official code)",
            "choices": CLOCKS,
        },
    )
    memo_size: int = field(
        default=256, metadata={"help": "scored labellings kept for reuse", "min": 0}
    )


@dataclass
class Evaluation:
    """U of one labelling, with its parts."""

    utility: float
    predictability: float
    inconsistencies: int
    terms: np.ndarray  # (n_labelled, 2), rows in data-set order of the labelled examples


@dataclass
class State:
    """Everything needed to continue a search exactly: saved after every iteration."""

    labels: list[int]
    iteration: int
    accepted: int
    utility: float
    inconsistencies: int
    rng: dict

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> State:
        return cls(**d)


@dataclass
class Step:
    """One iteration of Algorithm 1, for the trace."""

    n: int
    temperature: float
    index: int
    proposed: int
    previous: int
    delta: float
    accepted: bool
    skipped: bool
    utility: float
    inconsistencies: int
    fixes: int


def temperature(n: int, cfg: SearchConfig) -> float:
    return max(cfg.tmin, cfg.t0 / (1 + cfg.beta * math.log(max(n, 1))))


class Search:
    """ICM over `examples` scored by `model` under the consistency `rule` (see RULES).

    `fixed` maps example indices to labels a person gave: they are demonstrations from the
    start and are never proposed, flipped or changed by ConsistencyFix."""

    def __init__(
        self,
        examples: Sequence[Example],
        model: LabelModel,
        rule: str = "none",
        config: SearchConfig | None = None,
        fixed: dict[int, int] | None = None,
    ) -> None:
        self.examples = list(examples)
        self.model = model
        self.cfg = config or SearchConfig()
        self.fixed = dict(fixed or {})
        self.cons: list[Constraint] = constraints(rule, self.examples)
        self._memo: OrderedDict[tuple, Evaluation] = OrderedDict()
        self.rng = np.random.default_rng()

    # -- U(D) ---------------------------------------------------------------------------------
    @staticmethod
    def _key(labels: Sequence[int]) -> tuple:
        return tuple((i, y) for i, y in enumerate(labels) if y >= 0)

    def _terms(self, labels: Sequence[int]) -> np.ndarray:
        idx = [i for i, y in enumerate(labels) if y >= 0]
        if not idx:
            return np.zeros((0, 2))
        return self.model.loo_logprobs(
            [self.examples[i].prompt for i in idx], [labels[i] for i in idx]
        )

    def evaluate(self, labels: Sequence[int], terms: np.ndarray | None = None) -> Evaluation:
        """U of a labelling; a labelling already scored is not scored again."""
        key = self._key(labels)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return hit
        ys = [y for y in labels if y >= 0]
        terms = self._terms(labels) if terms is None else terms
        p = predictability(terms, ys, self.cfg.score)
        bad = len(violations(self.cons, labels))
        ev = Evaluation(utility(p, bad, self.cfg.alpha), p, bad, terms)
        self._memo[key] = ev
        if len(self._memo) > self.cfg.memo_size:
            self._memo.popitem(last=False)
        return ev

    def evaluate_all(self, candidates: Sequence[Sequence[int]]) -> list[Evaluation]:
        """U of several labellings. Those not scored yet are scored at once when the model can
        take several calls at once (its optional `parallel`, e.g. a server's streams): the
        result is the same as one after the other."""
        todo = list(
            {self._key(c): c for c in candidates if self._key(c) not in self._memo}.values()
        )
        parallel = getattr(self.model, "parallel", 1)
        if parallel > 1 and len(todo) > 1:
            with ThreadPoolExecutor(min(parallel, len(todo))) as pool:
                terms = list(pool.map(carry_meters(self._terms), todo))
            for cand, t in zip(todo, terms, strict=True):
                self.evaluate(cand, t)
        return [self.evaluate(c) for c in candidates]

    def predict(self, labels: Sequence[int], index: int) -> np.ndarray:
        """[log P(False), log P(True)] of example `index` given every other labelled example."""
        idx = [i for i, y in enumerate(labels) if y >= 0 and i != index]
        return self.model.query_logprobs(
            [self.examples[i].prompt for i in idx],
            [labels[i] for i in idx],
            [self.examples[index].prompt],
        )[0]

    # -- Algorithm 2 --------------------------------------------------------------------------
    def consistency_fix(self, labels: list[int]) -> tuple[list[int], Evaluation, int]:
        """Resolve inconsistent pairs while that raises U; returns labels, U, fixes applied."""
        current = self.evaluate(labels)
        fixes = 0
        for _ in range(self.cfg.fix_steps):
            bad = violations(self.cons, labels)
            if not bad:
                break
            c = bad[int(self.rng.integers(len(bad)))]
            best, best_ev = None, current
            cands = []
            for a, b in c.allowed:
                if self.fixed.get(c.i, a) != a or self.fixed.get(c.j, b) != b:
                    continue  # a person's label stays
                cand = list(labels)
                cand[c.i], cand[c.j] = a, b
                cands.append(cand)
            for cand, ev in zip(cands, self.evaluate_all(cands), strict=True):
                if ev.utility > best_ev.utility:
                    best, best_ev = cand, ev
            if best is not None:
                labels, current = best, best_ev
                fixes += 1
        return labels, current, fixes

    # -- Algorithm 1 --------------------------------------------------------------------------
    def start(self, seed: int | Sequence[int]) -> State:
        """K random examples with balanced random labels, then ConsistencyFix."""
        self.rng = np.random.default_rng(seed)
        n = len(self.examples)
        labels = [self.fixed.get(i, -1) for i in range(n)]
        free = [i for i in range(n) if i not in self.fixed]
        k = min(self.cfg.initial, len(free))
        chosen = self.rng.choice(free, size=k, replace=False) if k else []
        init = np.array([i % 2 for i in range(k)])
        self.rng.shuffle(init)
        for i, y in zip(chosen, init, strict=True):
            labels[int(i)] = int(y)
        labels, ev, _ = self.consistency_fix(labels)
        return State(labels, 0, 0, ev.utility, ev.inconsistencies, self.rng.bit_generator.state)

    def resume(self, state: State) -> None:
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng

    def sample(self, labels: Sequence[int]) -> int:
        """Unlabelled examples in a group with a labelled member are `group_weight` x likelier."""
        touched = {self.examples[i].group for i, y in enumerate(labels) if y >= 0}
        touched.discard(None)
        w = np.array(
            [
                0.0
                if i in self.fixed
                else self.cfg.group_weight
                if y < 0 and ex.group in touched
                else 1.0
                for i, (ex, y) in enumerate(zip(self.examples, labels, strict=True))
            ]
        )
        return int(self.rng.choice(len(w), p=w / w.sum()))

    def step(self, state: State) -> Step:
        """One iteration: sample, propose the model's argmax label, fix, accept by Metropolis."""
        n = state.iteration + 1
        clock = n if self.cfg.clock == "iteration" else state.accepted + 1
        t = temperature(clock, self.cfg)
        if len(self.fixed) == len(self.examples):  # a person labelled them all: nothing to do
            state.iteration = n
            return Step(n, t, -1, -1, -1, 0.0, False, True, state.utility, state.inconsistencies, 0)
        i = self.sample(state.labels)
        y = int(np.argmax(self.predict(state.labels, i)))
        prev = state.labels[i]
        state.iteration = n
        if y == prev:
            state.rng = self.rng.bit_generator.state
            return Step(n, t, i, y, prev, 0.0, False, True, state.utility, state.inconsistencies, 0)
        proposal = list(state.labels)
        proposal[i] = y
        proposal, ev, fixes = self.consistency_fix(proposal)
        delta = ev.utility - state.utility
        # ConsistencyFix may undo the proposal (fix its pair back): then nothing changes.
        changed = proposal != state.labels
        accept = changed and (delta > 0 or self.rng.random() < math.exp(delta / t))
        if accept:
            state.labels, state.utility, state.inconsistencies = (
                proposal,
                ev.utility,
                ev.inconsistencies,
            )
            state.accepted += 1
        state.rng = self.rng.bit_generator.state
        return Step(
            n, t, i, y, prev, delta, accept, False, state.utility, state.inconsistencies, fixes
        )

    def run(self, state: State, iterations: int) -> Iterator[Step]:
        """Steps until `state.iteration == iterations`: a total, so a resumed run ends where
        a fresh one does."""
        while state.iteration < iterations:
            yield self.step(state)

    def final_terms(self, labels: Sequence[int]) -> np.ndarray:
        """[log P(False), log P(True)] for every example: labelled ones leave-one-out, the rest
        given the whole labelled set."""
        out = np.zeros((len(labels), 2))
        idx = [i for i, y in enumerate(labels) if y >= 0]
        if idx:
            out[idx] = self.evaluate(labels).terms
        rest = [i for i, y in enumerate(labels) if y < 0]
        if rest:
            out[rest] = self.model.query_logprobs(
                [self.examples[i].prompt for i in idx],
                [labels[i] for i in idx],
                [self.examples[i].prompt for i in rest],
            )
        return out
