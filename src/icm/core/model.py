"""The interface between the search and a language model: a base class every backend extends.

Two methods are required (`loo_logprobs`, `query_logprobs`); every optional feature is declared
here with its default, so a backend states what it offers by overriding it and callers never probe.
Log-probabilities are normalised over the two labels: row i is `[log P(False), log P(True)]`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class LabelModel(ABC):
    """What ICM needs from a model, and what a backend may add.

    Counters are updated by `charge` from the thread that made the call. The optional features
    change what a run can check up front: with `count_tokens` and `max_context`, data is cut into
    batches that fit the context and a prompt too long for it is refused before a run starts;
    with `parallel` above 1, labellings are scored several at once.
    """

    calls: int = 0
    """Model calls so far (forward passes or server requests)."""
    tokens: int = 0
    """Prompt tokens processed so far (prefill; cached tokens a server reuses still count)."""
    cached_tokens: int = 0
    """Of `tokens`, those a server took from its prefix cache."""
    scores: int = 0
    """Label scores a backend that can only approximate some counts (0 where all are exact)."""
    approximate_scores: int = 0
    """Of `scores`, those that are approximations (a server's top-k held one label word only)."""
    parallel: int = 1
    """Scoring calls the model takes at once (a server's streams); results do not depend on it."""
    max_context: int | None = None
    """Tokens one prompt may hold; None: not known."""
    window: int | None = None
    """The attention window of a sliding-window model when it bounds `max_context`, else None."""
    identity: dict[str, Any] | None = None
    """What the weights are (name, revision, checksum...): a resume must find the same."""

    @abstractmethod
    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        """Leave-one-out label log-probs, shape (n, 2).

        Row i scores `prompts[i]` with every other prompt before it as a labelled demonstration,
        in the order `icm.core.data.loo_orders(n)[i]`.
        """

    @abstractmethod
    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        """Label log-probs of each query after all `demos` (in the given order), shape (m, 2)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens of each text by the model's own tokenizer; None when it cannot count."""
        return None

    def describe(self) -> str:
        """How the model runs (device, dtype, threads), for a run's first line."""
        return ""

    def fingerprint(self) -> dict[str, Any]:
        """`identity`, or the backend's name when it gives none."""
        return dict(self.identity) if self.identity else {"backend": type(self).__name__}

    def close(self) -> None:
        """Release connections, threads or memory; the model is not used afterwards."""
        return None

    def cached(self, cache: Any) -> LabelModel | None:
        """This model keeping its answers in `cache` (a `backends.caching.CallCache`) in its own
        finer way, or None: the model is then wrapped in a `CachingModel` by whole calls."""
        return None


def guess_tokens(text: str) -> int:
    """Tokens of a text without a tokenizer: about three characters a token, on the safe side."""
    return len(text) // 3 + 1


def token_counts(model: LabelModel, texts: Sequence[str]) -> list[int] | None:
    """Tokens of each text by the model's own tokenizer; None when the backend cannot count."""
    counts = model.count_tokens(list(texts))
    return None if counts is None else [int(n) for n in counts]


def token_costs(model: LabelModel, texts: Sequence[str]) -> list[int]:
    """Tokens of each text by the model's tokenizer or, without one, `guess_tokens`."""
    return token_counts(model, texts) or [guess_tokens(t) for t in texts]


@dataclass(eq=False)  # meters are told apart by identity: two may hold equal counts
class Usage:
    """Model work: calls (forward passes or requests), prompt tokens, and the prompt tokens a
    server took from its prefix cache instead of computing them."""

    calls: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    scores: int = 0
    approximate_scores: int = 0


_meters = threading.local()
_lock = threading.Lock()


def _open() -> list[Usage]:
    """The meters open in this thread, innermost last."""
    return _meters.__dict__.setdefault("open", [])


def charge(model: LabelModel, calls: int, tokens: int, cached_tokens: int = 0) -> None:
    """Count work on `model`'s counters and on every meter open in this thread.

    Backends call it from the thread that called `loo_logprobs` or `query_logprobs`, so that
    searches running at once (chains, batches) each see their own work."""
    with _lock:
        model.calls += calls
        model.tokens += tokens
        model.cached_tokens += cached_tokens
        for usage in _open():
            usage.calls += calls
            usage.tokens += tokens
            usage.cached_tokens += cached_tokens


def charge_scores(model: LabelModel, scores: int, approximate: int) -> None:
    """Count label scores, and those of them that are approximations, as `charge` counts work."""
    with _lock:
        model.scores += scores
        model.approximate_scores += approximate
        for usage in _open():
            usage.scores += scores
            usage.approximate_scores += approximate


@contextmanager
def metered() -> Iterator[Usage]:
    """The model work done in this thread while the block runs."""
    usage = Usage()
    stack = _open()
    stack.append(usage)
    try:
        yield usage
    finally:
        stack.remove(usage)


def carry_meters(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, charging the meters open in this thread from whichever thread runs it."""
    meters = list(_open())

    def run(*args, **kwargs) -> T:
        saved = _open()
        _meters.open = list(meters)
        try:
            return fn(*args, **kwargs)
        finally:
            _meters.open = saved

    return run
