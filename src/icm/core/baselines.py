"""Cheap labellings to beat: what the model says with no search at all.

zero-shot + consistency: each example's zero-shot log-odds (no demonstrations), then the rule
applied per group (the consistent labelling that agrees best with them). Bootstrapped few-shot:
that labelling, then, round after round, each example relabelled from every other example's
current label (leave-one-out), decoded under the rule again. Both cost a few model calls per
example; ICM's search has to beat them to be worth its price.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def bootstrapped_fewshot(
    model: LabelModel, prompts: Sequence[str], structure: Structure, rounds: int
) -> list[int]:
    """Zero-shot + consistency, then up to `rounds` leave-one-out relabellings under the rule,
    until nothing changes."""
    labels = zero_shot_consistent(model, prompts, structure)
    for _ in range(rounds):
        lp = model.loo_logprobs(prompts, labels)
        new = structure.decode(lp[:, 1] - lp[:, 0])
        if new == labels:
            break
        labels = new
    return labels
