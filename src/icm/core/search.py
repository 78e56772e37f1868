"""Algorithm 1 (simulated-annealing search) and Algorithm 2 (ConsistencyFix) of the ICM paper.

The state is a label per example: -1 (unlabelled), 0 (False) or 1 (True). The labelled set D is
always taken in data-set order, so the same labelling always makes the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .baselines import zero_shot_consistent
from .consistency import Constraint, Structure, constraints, violations
from .data import Example
from .model import LabelModel
from .objective import Evaluation, Objective
from .score import SCORES

CLOCKS = ("iteration", "accepted")
INITS = ("random", "zero-shot")
"""random: K random (balanced) labels, the paper's start. zero-shot: every example labelled by the
model's zero-shot log-odds, decoded under the consistency rule (a cheap, gold-free warm start)."""
MOVES = ("fix", "consistent")
"""fix: flip one label, then ConsistencyFix (Algorithm 2): the rule is a soft penalty, as in the
paper. consistent: flip one label and the labels the rule then forces, so every state obeys it."""


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
    orders: int = field(
        default=1,
        metadata={
            "help": "demonstration orders U is averaged over: 1 is the paper (data-set order); "
            "more make U less a matter of the order the demonstrations happen to come in",
            "min": 1,
            "max": 16,
        },
    )
    init: str = field(
        default="zero-shot",
        metadata={
            "help": "random (K balanced random labels, the paper) or zero-shot (every example "
            "labelled by its zero-shot log-odds under the rule)",
            "choices": INITS,
        },
    )
    moves: str = field(
        default="consistent",
        metadata={
            "help": "fix (flip, then ConsistencyFix: the paper) or consistent (flip with the "
            "labels the rule forces: every state obeys the rule)",
            "choices": MOVES,
        },
    )
    keep_best: bool = field(
        default=True,
        metadata={"help": "end on the best consistent, complete labelling visited, not the last"},
    )
    polish: bool = field(
        default=True,
        metadata={
            "help": "after the iterations: complete the labelling, repair it exactly and apply "
            "single and whole-group moves while one raises U"
        },
    )
    fix_first: bool = field(
        default=False,
        metadata={
            "help": "apply a proposal's first ConsistencyFix repair even when it lowers U (the "
            "official code compares it with a placeholder score, so it always passes)"
        },
    )
    per_example: float = field(
        default=2.0,
        metadata={
            "help": "iterations per example of a batch when --iterations is not given (the "
            "paper: 1, n = 1..N; the official code: 3000 for 256)",
            "above": 0,
            "max": 10**6,
        },
    )

    @classmethod
    def paper(cls, **kw) -> SearchConfig:
        """Algorithms 1 and 2 as the paper states them (`icm run --algorithm paper`): K = 8
        random labels, flip + ConsistencyFix, the last state, U = 50 * sum of log-probs - I in
        data-set order, T = 10 / (1 + 0.99 log n), n = 1..N."""
        return cls(**(PAPER | kw))

    @classmethod
    def official(cls, **kw) -> SearchConfig:
        """The configuration of the authors' released code (`icm run --algorithm official`):
        as the paper, but U = 30 * mean log-odds - I, T = 10 / (1 + 2 log(1 + accepted
        flips)), 3000 iterations for a batch of 256, and a proposal's first ConsistencyFix
        repair applied unconditionally."""
        return cls(**(OFFICIAL | kw))

    def differences(self) -> dict[str, Any]:
        """The options where this configuration differs from the default one."""
        base = SearchConfig()
        return {
            k: v for k, v in self.__dict__.items() if getattr(base, k) != v and k != "memo_size"
        }


PAPER: dict[str, Any] = {
    "init": "random",
    "moves": "fix",
    "keep_best": False,
    "polish": False,
    "orders": 1,
    "score": "sum-logprob",
    "alpha": 50.0,
    "per_example": 1.0,
}
"""Algorithm 1 and 2 with the paper's objective and constants (its appendix A.1: T0 = 10, Tmin
= 0.01, beta = 0.99, alpha starts at 50; K = 8; sampling weight 100; M = 10)."""
OFFICIAL: dict[str, Any] = PAPER | {
    "score": "mean-logodds",
    "alpha": 30.0,
    "clock": "accepted",
    "beta": 2.0,
    "per_example": 3000 / 256,
    "fix_first": True,
}
"""The released code's defaults (alpha 30, K = 3000 at a batch of 256, the log schedule over
accepted flips) on top of the paper's."""

ALGORITHMS: dict[str, Callable[..., SearchConfig]] = {
    "default": SearchConfig,
    "paper": SearchConfig.paper,
    "official": SearchConfig.official,
}
"""Named starting points for the search options (`icm run --algorithm`)."""


@dataclass
class State:
    """Everything needed to continue a search exactly: saved after every iteration."""

    labels: list[int]
    iteration: int
    accepted: int
    utility: float
    inconsistencies: int
    rng: Mapping[str, Any]
    best_utility: float = -math.inf
    """The highest U of any labelling the search has been in."""
    best_labels: list[int] | None = None
    """The consistent labelling of every example with the highest U visited (None: none yet)."""
    best_complete: float = -math.inf
    polish_moves: int = 0
    """Moves the polish has applied; -1 once it found none that raises U."""

    def to_json(self) -> dict:
        return {k: _finite(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> State:
        d = dict(d)
        for k in ("best_utility", "best_complete"):
            d[k] = -math.inf if d.get(k) is None else d[k]
        return cls(**d)

    def visit(self, labels: list[int], utility: float, complete: bool) -> None:
        """Remember `labels` if it is the best so far (overall, and among complete ones)."""
        self.best_utility = max(self.best_utility, utility)
        if complete and utility > self.best_complete:
            self.best_labels, self.best_complete = list(labels), utility


def _finite(v: object) -> object:
    return None if isinstance(v, float) and not math.isfinite(v) else v


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
        self.structure = Structure(self.cons, len(self.examples), self.fixed)
        self.objective = Objective(
            self.examples, model, self.cons, self.cfg.score, self.cfg.alpha, self.cfg.memo_size
        )
        self.objective.ranks = Objective.orders_of(len(self.examples), self.cfg.orders)
        # U(D) and the model's predictions, as Algorithms 1 and 2 use them:
        self.evaluate, self.evaluate_all = self.objective.evaluate, self.objective.evaluate_all
        self.query, self.final_terms = self.objective.query, self.objective.final_terms
        self.width = model.parallel
        self.rng = np.random.default_rng()

    # -- U(D) (objective.py) ------------------------------------------------------------------
    def reordered(self, r: int) -> Objective:
        """U under demonstration order `r` alone (see `Objective.orders_of`)."""
        return self.objective.reordered(r)

    # -- Algorithm 2 --------------------------------------------------------------------------
    def consistency_fix(
        self, labels: list[int], first_always: bool = False
    ) -> tuple[list[int], Evaluation, int]:
        """Resolve inconsistent pairs while that raises U; returns labels, U, fixes applied.
        `first_always`: the first round's best repair is applied even if it lowers U."""
        current = self.evaluate(labels)
        fixes = 0
        for step in range(self.cfg.fix_steps):
            bad = violations(self.cons, labels)
            if not bad:
                break
            c = bad[int(self.rng.integers(len(bad)))]
            best, best_ev = None, current
            if first_always and step == 0:
                best_ev = Evaluation(-math.inf, -math.inf, 0, current.terms)
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
    def start(self, seed: int | Sequence[int], labels: Sequence[int] | None = None) -> State:
        """The first labelling: K random examples with balanced random labels, then
        ConsistencyFix (the paper); or every example's zero-shot label under the rule; or
        `labels`, when given (fixed labels are kept)."""
        self.rng = np.random.default_rng(seed)
        if labels is not None or self.cfg.init == "zero-shot":
            if labels is None:
                labels = self.zero_shot()
            labels = [self.fixed.get(i, y) for i, y in enumerate(labels)]
            ev = self.evaluate(labels)
        else:
            labels = self._random_start()
            labels, ev, _ = (
                self.consistency_fix(labels)
                if self.cfg.moves == "fix"
                else (labels, self.evaluate(labels), 0)
            )
        state = State(labels, 0, 0, ev.utility, ev.inconsistencies, self.rng.bit_generator.state)
        self._visit(state)
        return state

    def _random_start(self) -> list[int]:
        n = len(self.examples)
        labels = [self.fixed.get(i, -1) for i in range(n)]
        free = [i for i in range(n) if i not in self.fixed]
        k = min(self.cfg.initial, len(free))
        chosen: np.ndarray | list[int] = self.rng.choice(free, size=k, replace=False) if k else []
        init = np.array([i % 2 for i in range(k)])
        self.rng.shuffle(init)
        for i, y in zip(chosen, init, strict=True):
            if self.cfg.moves == "fix":
                labels[int(i)] = int(y)
            else:  # each new label with what the rule forces, so the start is consistent
                labels = self.structure.move(labels, int(i), int(y)) or labels
        return labels

    def predict(self, labels: Sequence[int], index: int) -> np.ndarray:
        """[log P(False), log P(True)] of example `index` given every other labelled example."""
        return self.query(labels, [index])[0]

    def zero_shot(self) -> list[int]:
        """Every example's zero-shot label (no demonstrations), decoded under the rule: the
        consistent labelling that agrees best with the zero-shot log-odds."""
        return zero_shot_consistent(self.model, [ex.prompt for ex in self.examples], self.structure)

    def _visit(self, state: State) -> None:
        complete = all(y >= 0 for y in state.labels)
        state.visit(state.labels, state.utility, complete and state.inconsistencies == 0)

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
        state.iteration = n
        if len(self.fixed) == len(self.examples):  # a person labelled them all: nothing to do
            return Step(n, t, -1, -1, -1, 0.0, False, True, state.utility, state.inconsistencies, 0)
        i = self.sample(state.labels)
        y = self.propose(state.labels, i)
        prev = state.labels[i]
        proposal: list[int] | None = None
        if y != prev:
            proposal = list(state.labels)
            proposal[i] = y
            if self.cfg.moves == "consistent":
                proposal = self.structure.move(state.labels, i, y)
        if proposal is None:  # the model agrees with the label, or the rule forbids the move
            state.rng = self.rng.bit_generator.state
            return Step(n, t, i, y, prev, 0.0, False, True, state.utility, state.inconsistencies, 0)
        if self.cfg.moves == "fix":
            proposal, ev, fixes = self.consistency_fix(proposal, self.cfg.fix_first)
        else:
            ev, fixes = self.evaluate(proposal), 0
        delta = ev.utility - state.utility
        # ConsistencyFix may undo the proposal (fix its pair back): then nothing changes.
        changed = proposal != state.labels
        accept = changed and (delta > 0 or self.rng.random() < math.exp(delta / t))
        if accept:
            state.labels, state.utility = proposal, ev.utility
            state.inconsistencies = ev.inconsistencies
            state.accepted += 1
            self._visit(state)
        state.rng = self.rng.bit_generator.state
        return Step(
            n, t, i, y, prev, delta, accept, False, state.utility, state.inconsistencies, fixes
        )

    def propose(self, labels: Sequence[int], i: int) -> int:
        """argmax_y P(y | x_i, D - i). For a labelled example in consistent moves, the
        leave-one-out term of the current labelling already is that (no model call)."""
        if self.cfg.moves == "consistent" and labels[i] >= 0:
            ev = self.evaluate(labels)
            row = sum(y >= 0 for y in labels[:i])
            return int(np.argmax(ev.terms[row]))
        return int(np.argmax(self.predict(labels, i)))

    def run(self, state: State, iterations: int) -> Iterator[Step]:
        """Steps until `state.iteration == iterations`: a total, so a resumed run ends where
        a fresh one does."""
        if state.iteration < iterations:
            state.polish_moves = 0  # more iterations: settle again after them
        while state.iteration < iterations:
            yield self.step(state)
