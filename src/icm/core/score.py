"""U(D) = alpha * P(D) - I(D) from the leave-one-out label log-probs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORES = ("sum-logprob", "mean-logodds")
"""sum-logprob: the paper's P(D) = sum_i log P(y_i | x_i, D - i).
mean-logodds: the official code's mean of log P(y_i) - log P(not y_i)."""


def predictability(terms: np.ndarray, labels: Sequence[int], score: str = "sum-logprob") -> float:
    """P(D) for `terms` of shape (n, 2) and the labels of the same n examples."""
    if len(labels) == 0:
        return 0.0
    y = np.asarray(labels, dtype=int)
    rows = np.arange(len(y))
    if score == "sum-logprob":
        return float(terms[rows, y].sum())
    if score == "mean-logodds":
        return float((terms[rows, y] - terms[rows, 1 - y]).mean())
    raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def utility(predictability: float, inconsistencies: int, alpha: float) -> float:
    return alpha * predictability - inconsistencies
