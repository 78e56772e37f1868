"""A deterministic stand-in scorer with a planted labelling, for testing the search logic alone.

Example i "believes" its planted label more strongly the more of the other demonstrations carry
their planted labels (and less for each that does not), plus a small bias towards it, so the
planted labelling of every example maximises U, as in-context learning behaves for a model that
holds the concept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from icm.core.model import LabelModel


class PlantedModel(LabelModel):
    def __init__(self, planted: dict[str, int], weight: float = 0.25, bias: float = 3.0) -> None:
        self.planted, self.weight, self.bias = planted, weight, bias
        self.calls = 0
        self.tokens = 0

    def _logprobs(self, prompt: str, demos: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        sign = 2 * self.planted[prompt] - 1
        net = sum(1 if y == self.planted[d] else -1 for d, y in zip(demos, labels, strict=True))
        logit = sign * (self.weight * net + self.bias)
        return np.array([-np.logaddexp(0, logit), -np.logaddexp(0, -logit)])

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        self.calls += len(prompts)
        out = np.zeros((len(prompts), 2))
        for i, p in enumerate(prompts):
            others = [j for j in range(len(prompts)) if j != i]
            out[i] = self._logprobs(p, [prompts[j] for j in others], [labels[j] for j in others])
        return out

    def query_logprobs(self, demos, labels, queries) -> np.ndarray:
        self.calls += len(queries)
        return np.array([self._logprobs(q, demos, labels) for q in queries])


class NoiseModel(LabelModel):
    """A scorer whose every log-odds is a fixed pseudo-random draw for the prompt, its
    demonstrations and their labels: no labelling is special under it (the null hypothesis of
    the concept test, exactly), yet the same call always gives the same answer."""

    def __init__(self, sd: float = 1.0) -> None:
        self.sd = sd
        self.calls = 0

    def _logodds(self, prompt: str, demos: Sequence[str], labels: Sequence[int]) -> float:
        key = repr((prompt, tuple(demos), tuple(int(y) for y in labels))).encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
        return float(np.random.default_rng(seed).normal(0, self.sd))

    def _row(self, lo: float) -> np.ndarray:
        return np.array([-np.logaddexp(0, lo), -np.logaddexp(0, -lo)])

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        self.calls += len(prompts)
        rows = []
        for i, p in enumerate(prompts):
            demos = [q for j, q in enumerate(prompts) if j != i]
            ys = [y for j, y in enumerate(labels) if j != i]
            rows.append(self._row(self._logodds(p, demos, ys)))
        return np.array(rows)

    def query_logprobs(self, demos, labels, queries) -> np.ndarray:
        self.calls += len(queries)
        return np.array([self._row(self._logodds(q, demos, labels)) for q in queries])
