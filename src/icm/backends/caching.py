"""Scores kept across runs: a call cache any backend can use.

`CallCache` is a SQLite file that icm made (marked in its header; another program's database is
refused). `CachingModel(model, cache)` wraps any `LabelModel`: each scoring call is answered from
the cache when the same model (by its identity) was asked the same thing before, so a rerun of a
seeded search computes nothing again and gives the same labels, bit for bit. A backend that can
cache finer than whole calls takes the cache itself (`LabelModel.cached`): the OpenAI backend
keeps each request's answer, so prompts shared by different calls are asked once.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import files
from ..core.model import LabelModel
from ..errors import ConfigError, IcmError


class CallCache:
    """Answers already computed, in SQLite, keyed by a hash of the call and of the model's
    identity: a rerun of the same search computes nothing again, and a new checkpoint under an
    old name is never answered from it."""

    APPLICATION_ID = 0x49434D31  # "ICM1" in the SQLite header: this file is icm's call cache

    def __init__(self, path: str | Path) -> None:
        self.lock = threading.Lock()
        path = self.path = Path(path)
        if path.is_symlink():
            raise IcmError(f"{path}: is a link; give the call cache's own path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), check_same_thread=False)
            self._claim(path)
        except (OSError, sqlite3.Error) as e:
            raise IcmError(f"{path}: cannot use it as the call cache: {e}") from e

    def _claim(self, path: Path) -> None:
        """A new file becomes icm's call cache; an existing one must be one (marked in its
        header, or an older icm's with its one table): another program's database is refused
        before anything is written to it."""
        (app,) = self.db.execute("PRAGMA application_id").fetchone()
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        ours = app == self.APPLICATION_ID or (
            app == 0 and tables <= {"calls", "sqlite_autoindex_calls_1"}
        )
        if not ours:
            self.db.close()
            raise IcmError(
                f"{path}: a database icm did not create; --call-cache needs a new file or one "
                "icm made"
            )
        with self.db:
            self.db.execute(f"PRAGMA application_id = {self.APPLICATION_ID}")
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, top TEXT)")

    @staticmethod
    def key(call: object, identity: dict) -> str:
        """The call (a request, or a method and its inputs) and the model's identity."""
        text = json.dumps([call, identity], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str, valid: Callable[[Any], bool]) -> Any:
        """The answer stored under `key` (decoded JSON), or None. An answer that is not JSON,
        holds NaN or infinity, or fails `valid` (its shape, types and ranges) is refused: the
        file was changed by someone other than icm."""
        with self.lock:
            row = self.db.execute("SELECT top FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            answer = files.loads(row[0]) if isinstance(row[0], str) else None
        except ValueError:
            answer = None
        if answer is None or not valid(answer):
            raise IcmError(
                f"{self.path}: a stored answer is not what icm writes (a non-finite or misshapen "
                "score: edited?); remove the file or pass another --call-cache"
            )
        return answer

    def put(self, key: str, answer: object) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(answer)))

    def close(self) -> None:
        self.db.close()


def logprob(v: object) -> bool:
    """A log-probability as the cache keeps it: a finite number, at most 0 (rounding aside)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v < 1e-6


def rows_of_two(n: int) -> Callable[[Any], bool]:
    """An answer of `n` rows of two label log-probs."""

    def valid(a: Any) -> bool:
        return (
            isinstance(a, list)
            and len(a) == n
            and all(isinstance(r, list) and len(r) == 2 and all(map(logprob, r)) for r in a)
        )

    return valid


class CachingModel(LabelModel):
    """`inner`'s scores through a call cache; everything else is `inner`'s."""

    def __init__(self, inner: LabelModel, cache: CallCache, fmt: object = None) -> None:
        self.inner, self.cache, self.fmt = inner, cache, repr(fmt)
        self.parallel, self.max_context, self.window = (
            inner.parallel,
            inner.max_context,
            inner.window,
        )
        self.identity = inner.identity
        self.cache_hits = 0

    def _cached(self, call: list, n: int, compute) -> np.ndarray:  # type: ignore[no-untyped-def]
        key = CallCache.key([*call, self.fmt], self.inner.fingerprint())
        hit = self.cache.get(key, rows_of_two(n))
        if hit is not None:
            self.cache_hits += 1
            return np.array(hit, dtype=float).reshape(-1, 2)
        out = compute()
        self.cache.put(key, [[float(a), float(b)] for a, b in out])
        return out

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        call = ["loo", list(prompts), [int(y) for y in labels]]
        return self._cached(call, len(prompts), lambda: self.inner.loo_logprobs(prompts, labels))

    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        call = ["query", list(demos), [int(y) for y in labels], list(queries)]
        return self._cached(
            call, len(queries), lambda: self.inner.query_logprobs(demos, labels, queries)
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return self.inner.count_tokens(texts)

    def describe(self) -> str:
        return self.inner.describe() + ", with a call cache"

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def close(self) -> None:
        self.inner.close()
        self.cache.close()


def with_cache(model: LabelModel, path: str | Path, fmt: object = None) -> LabelModel:
    """`model` with the call cache at `path`: its own where it caches finer, else wrapped."""
    if not model.identity:
        raise ConfigError(
            "--call-cache: this model gives no identity (what its weights are), so answers "
            "kept for another model could be taken for its own"
        )
    cache = CallCache(path)
    return model.cached(cache) or CachingModel(model, cache, fmt)
