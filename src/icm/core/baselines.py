"""Cheap labellings to beat: what the model says with no search at all.

zero-shot + consistency: each example's zero-shot log-odds (no demonstrations), then the rule
applied per group (the consistent labelling that agrees best with them). Bootstrapped few-shot:
that labelling, then, round after round, each example relabelled from every other example's
current label (leave-one-out), decoded under the rule again. Both cost a few model calls per
example; ICM's search has to beat them to be worth its price.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .consistency import Structure
from .model import LabelModel


def zero_shot_consistent(
    model: LabelModel, prompts: Sequence[str], structure: Structure
) -> list[int]:
    """The consistent labelling that agrees best with the zero-shot log-odds."""
    free = [i for i in range(len(prompts)) if i not in structure.fixed]
    margin = np.zeros(len(prompts))
    if free:
        lp = model.query_logprobs([], [], [prompts[i] for i in free])
        margin[free] = lp[:, 1] - lp[:, 0]
    return structure.decode(margin)


@dataclass
class Bootstrapped:
    """Bootstrapped few-shot labels, and how the rounds ended."""

    labels: list[int]
    rounds: int
    """Leave-one-out relabellings made."""
    outcome: str
    """converged: a round changed nothing. cycle: a round gave back an earlier labelling (the
    labels flip between `period` labellings and never settle; the last one is kept). stopped:
    still changing when the rounds ran out."""
    period: int = 0

    def text(self) -> str:
        if self.outcome == "converged":
            return f"converged after {self.rounds} rounds"
        if self.outcome == "cycle":
            return f"cycles between {self.period} labellings (stopped at round {self.rounds})"
        return f"still changing after {self.rounds} rounds"


def bootstrapped_fewshot(
    model: LabelModel, prompts: Sequence[str], structure: Structure, rounds: int
) -> Bootstrapped:
    """Zero-shot + consistency, then up to `rounds` leave-one-out relabellings under the rule,
    until nothing changes or the labels come back to an earlier labelling (a cycle)."""
    labels = zero_shot_consistent(model, prompts, structure)
    seen = [labels]
    for k in range(1, rounds + 1):
        lp = model.loo_logprobs(prompts, labels)
        new = structure.decode(lp[:, 1] - lp[:, 0])
        if new == labels:
            return Bootstrapped(labels, k, "converged")
        if new in seen:
            return Bootstrapped(new, k, "cycle", len(seen) - seen.index(new))
        seen.append(new)
        labels = new
    return Bootstrapped(labels, rounds, "stopped")
