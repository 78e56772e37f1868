"""The interface between the search and a language model: two methods and two counters.

Every backend (local transformers, an OpenAI-compatible server, a test stand-in) implements it.
Log-probabilities are normalised over the two labels: row i is `[log P(False), log P(True)]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LabelModel(Protocol):
    """What ICM needs from a model."""

    calls: int
    """Model calls so far (forward passes or server requests)."""
    tokens: int
    """Prompt tokens processed so far (prefill; cached tokens a server reuses still count)."""

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        """Leave-one-out label log-probs, shape (n, 2).

        Row i scores `prompts[i]` with every other prompt before it as a labelled demonstration,
        in the order `icm.core.data.loo_orders(n)[i]`.
        """
        ...

    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        """Label log-probs of each query after all `demos` (in the given order), shape (m, 2)."""
        ...


def token_counts(model: object, texts: Sequence[str]) -> list[int] | None:
    """Tokens of each text by the model's own tokenizer; None when the backend cannot count.

    A backend may offer two extras beyond `LabelModel`: `count_tokens(texts) -> list[int] | None`
    and `max_context` (its context length, or None). With them, data is cut into batches that
    fit the context, and an example too long for it is refused before a run starts.
    """
    count = getattr(model, "count_tokens", None)
    counts = count(list(texts)) if callable(count) else None
    return None if counts is None else [int(n) for n in counts]
