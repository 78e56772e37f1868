"""The statistics of an evaluation: bootstrap intervals over question groups, PGR and AUC.

Claims about one question succeed or fail together more often than independent ones would, so
every interval resamples whole groups; every method is measured on the same resamples, so that
differences between methods (PGR) are too.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ..errors import IcmError
from ..tasks import Dataset


class Resamples:
    """Bootstrap resamples of whole groups, shared by every method so that differences between
    methods (PGR) are measured on the same resamples.

    Claims about one question succeed or fail together more often than independent ones would,
    so resampling claims alone would make the interval too narrow."""

    def __init__(self, groups: Sequence[Hashable], resamples: int = 2000, seed: int = 0) -> None:
        ids: dict[Hashable, int] = {}
        self.g = np.array([ids.setdefault(x, len(ids)) for x in groups], dtype=int)
        self.sizes = np.bincount(self.g, minlength=len(ids)).astype(float)
        rng = np.random.default_rng(seed)
        self.pick = rng.integers(len(ids), size=(resamples, len(ids)))

    def accuracy(self, correct: Sequence[bool] | np.ndarray) -> np.ndarray:
        """The accuracy on every resample."""
        hits = np.bincount(self.g, weights=np.asarray(correct, float), minlength=len(self.sizes))
        return hits[self.pick].sum(1) / self.sizes[self.pick].sum(1)


def interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The percentile interval of resampled values (None where none is defined)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2
    return [float(x) for x in np.quantile(values, [tail, 1 - tail])]


def bootstrap_interval(
    correct: Sequence[bool] | np.ndarray,
    groups: Sequence[Hashable],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the accuracy, resampling whole groups with replacement."""
    if len(correct) == 0:
        raise ValueError("no claims to resample")
    lo, hi = interval(Resamples(groups, resamples, seed).accuracy(correct), level)  # type: ignore
    return lo, hi


def pgr(method: float, zero: float, gold: float) -> float | None:
    """Performance gap recovered: the share of the zero-shot-to-gold gap a method closes; None
    where gold labels do no better than zero-shot (there is no gap to recover)."""
    return None if gold <= zero else (method - zero) / (gold - zero) + 0.0  # no -0.0


def auc(scores: Sequence[float] | np.ndarray, gold: Sequence[int] | np.ndarray) -> float | None:
    """Probability that a True claim scores above a False one (ties count half); None if one class
    is missing. Accuracy hides a model that ranks well but sits on the wrong side of zero."""
    s, y = np.asarray(scores, dtype=float), np.asarray(gold, dtype=bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def split_groups(data: Dataset, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices of a (train, test) split by whole groups: the same file and seed give the
    same split. Rows without a group are groups of their own."""
    if not 0 < fraction < 1:
        raise IcmError(f"--split-test must be between 0 and 1, got {fraction}")
    members: dict[Hashable, list[int]] = {}
    for i, ex in enumerate(data.examples):
        members.setdefault(ex.group_or(i), []).append(i)
    if len(members) < 2:
        raise IcmError(f"{data.source}: cannot split {len(members)} group into train and test")
    keys = list(members)
    n_test = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
    order = np.random.default_rng(seed).permutation(len(keys))
    held = {keys[k] for k in order[:n_test]}
    train = sorted(i for k in keys if k not in held for i in members[k])
    test = sorted(i for k in held for i in members[k])
    return train, test
