"""The interface between the search and a language model: two methods and two counters.

Every backend (local transformers, an OpenAI-compatible server, a test stand-in) implements it.
Log-probabilities are normalised over the two labels: row i is `[log P(False), log P(True)]`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

T = TypeVar("T")


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


@dataclass(eq=False)  # meters are told apart by identity: two may hold equal counts
class Usage:
    """Model work: calls (forward passes or requests), prompt tokens, and the prompt tokens a
    server took from its prefix cache instead of computing them."""

    calls: int = 0
    tokens: int = 0
    cached_tokens: int = 0


_meters = threading.local()
_lock = threading.Lock()


def charge(model: object, calls: int, tokens: int, cached_tokens: int = 0) -> None:
    """Count work on `model`'s counters and on every meter open in this thread.

    Backends call it from the thread that called `loo_logprobs` or `query_logprobs`, so that
    searches running at once (chains, batches) each see their own work."""
    with _lock:
        model.calls = getattr(model, "calls", 0) + calls  # type: ignore[attr-defined]
        model.tokens = getattr(model, "tokens", 0) + tokens  # type: ignore[attr-defined]
        cached = getattr(model, "cached_tokens", 0) + cached_tokens
        model.cached_tokens = cached  # type: ignore[attr-defined]
        for usage in getattr(_meters, "open", ()):
            usage.calls += calls
            usage.tokens += tokens
            usage.cached_tokens += cached_tokens


@contextmanager
def metered() -> Iterator[Usage]:
    """The model work done in this thread while the block runs."""
    usage = Usage()
    stack = _meters.__dict__.setdefault("open", [])
    stack.append(usage)
    try:
        yield usage
    finally:
        stack.remove(usage)


def carry_meters(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, charging the meters open in this thread from whichever thread runs it."""
    meters = list(getattr(_meters, "open", ()))

    def run(*args, **kwargs) -> T:
        saved = getattr(_meters, "open", [])
        _meters.open = list(meters)
        try:
            return fn(*args, **kwargs)
        finally:
            _meters.open = saved

    return run
