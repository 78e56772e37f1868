"""An OpenAI-compatible completion server (vLLM, SGLang, llama.cpp) as the model.

Each leave-one-out term is one `/completions` request for the next token's top-k log-probs
(`max_tokens=1`, `logprobs=k`). The prompts follow `icm.core.data.loo_orders`, the order the
local backend's divide-and-conquer scorer uses, and are sent in that order, so consecutive
requests share long prefixes that a server with prefix caching computes once. Requests run on a
thread pool (`concurrency` streams in flight); the standard library's `http.client` is enough
for that, so this backend adds no dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import random
import re
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .. import files
from ..config import check_base_url
from ..core.data import PromptFormat, loo_orders
from ..core.model import charge
from ..errors import ConfigError, ContextLengthError, IcmError, ServerError

API_KEY_VARS = ("ICM_API_KEY", "OPENAI_API_KEY")
"""Where the API key is read from, in this order. It is never stored in the run folder."""
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_DELAY = 30.0


def api_key_from_env() -> str | None:
    for var in API_KEY_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def label_variants(word: str) -> set[str]:
    """The token texts that count as a label word: " True", "True", " true", "TRUE"...

    Only exact spellings count, never tokens that merely contain the word (" untrue")."""
    base = word.strip()
    forms = {base, base.lower(), base.capitalize(), base.upper()}
    return {p + f for f in forms for p in ("", " ")}


def _token_text(token: str) -> str:
    """Servers that return raw vocabulary pieces mark a leading space as "Ġ" or "▁"."""
    return " " + token[1:] if token[:1] in ("Ġ", "▁") else token


def top_logprobs(body: dict) -> list[tuple[str, float]]:
    """The next token's top-k (token text, log-prob) pairs from a completion response.

    Reads vLLM's and SGLang's legacy layout (`logprobs.top_logprobs[0]`, a dict token -> logprob)
    and llama.cpp's chat-style one (`logprobs.content[0].top_logprobs`, a list of
    `{id, token, bytes, logprob}`)."""
    try:
        lp = body["choices"][0]["logprobs"]
        if lp.get("content"):
            top = [(e["token"], e["logprob"]) for e in lp["content"][0]["top_logprobs"]]
        else:
            top = list(lp["top_logprobs"][0].items())
        out = [(str(t), float(v)) for t, v in top if isinstance(v, int | float)]
        if not out or len(out) < len(top):
            raise ValueError("a log-prob that is not a number")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ServerError(
            f"the server's answer has no top log-probs (read {type(e).__name__}: {e}); "
            "is it an OpenAI-compatible /completions endpoint that supports `logprobs`?"
        ) from e
    if not all(math.isfinite(v) and v <= 1e-6 for _, v in out):
        raise ServerError(f"the server's answer holds a log-prob that is not one: {out[:3]}...")
    return out


def label_logprobs(
    top: Sequence[tuple[str, float]], variants: Sequence[set[str]], k: int
) -> np.ndarray:
    """[log P(False), log P(True)] normalised over the two labels, from the top-k tokens.

    A label's mass is the sum over the top-k tokens that are exactly one of its spellings. When
    only one label appears, the other's mass is bounded by the smallest top-k probability (each
    of its spellings ranks below all of the top k) and that bound is used: the log-odds is then
    as small in magnitude as the server's answer allows. When neither appears, the answer says
    nothing about the labels, and that is an error rather than a guess.
    """
    mass = []
    for v in variants:
        lps = [lp for t, lp in top if _token_text(t) in v]
        mass.append(float(np.logaddexp.reduce(lps)) if lps else None)
    if all(m is None for m in mass):
        raise ServerError(
            f"neither label word is among the server's top {k} next tokens: ask for more with "
            "--top-logprobs (and raise the server's own cap, e.g. vLLM's --max-logprobs)"
        )
    floor = min(lp for _, lp in top)
    out = np.array([floor if m is None else m for m in mass])
    return out - np.logaddexp.reduce(out)


def count(value: object) -> int:
    """A token count from a server's `usage` (0 when absent or not a whole number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if value == value and value >= 0 and value == int(value) else 0


def redact(text: str, secret: str | None) -> str:
    """A server's error text with the API key, and any bearer token, blanked out."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


class _Stopped(Exception):
    """A request gave up because another request of its batch failed."""


class _Abort(threading.Event):
    """Set when a request of a batch fails for good; keeps that first error."""

    error: ServerError | None = None

    def fail(self, error: ServerError) -> ServerError:
        if not self.is_set():
            self.error = error
            self.set()
        return error


class CallCache:
    """Answers already received, in SQLite, keyed by a hash of model, prompt and parameters.

    A rerun of the same search sends no request. Searches running at once share it."""

    def __init__(self, path: str | Path) -> None:
        self.lock = threading.Lock()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), check_same_thread=False)
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, top TEXT)")
        except (OSError, sqlite3.Error) as e:
            raise IcmError(f"{path}: cannot use it as the call cache: {e}") from e

    @staticmethod
    def key(request: dict, served: dict) -> str:
        """The request and what the server said about its weights: a new checkpoint served
        under an old name is never answered from the cache."""
        text = json.dumps([request, served], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> list[tuple[str, float]] | None:
        with self.lock:
            row = self.db.execute("SELECT top FROM calls WHERE key = ?", (key,)).fetchone()
        return [tuple(p) for p in json.loads(row[0])] if row else None

    def put(self, items: dict[str, list[tuple[str, float]]]) -> None:
        # one transaction: a killed run leaves all of a batch or none of it
        with self.lock, self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )


class OpenAIModel:
    """A model behind an OpenAI-compatible completions endpoint. Implements `LabelModel`.

    `calls` and `tokens` count requests sent and their prompt tokens as the server reports them;
    `cached_tokens` the prompt tokens the server says it took from its prefix cache;
    `cache_hits` the answers taken from the call cache instead of the server.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        fmt: PromptFormat | None = None,
        top_logprobs: int = 20,
        concurrency: int = 8,
        timeout: float = 120.0,
        retries: int = 6,
        api_key: str | None = None,
        call_cache: str | Path | None = None,
    ) -> None:
        try:
            check_base_url(base_url)
        except ConfigError as e:
            raise ServerError(str(e)) from e
        parts = urlsplit(base_url.rstrip("/"))
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path or "/v1"  # a bare host means the usual /v1 prefix
        self.netloc = parts.netloc
        self.url = f"{parts.scheme}://{parts.netloc}{self.path}"
        self.fmt = fmt or PromptFormat()
        self.k = top_logprobs
        self.timeout, self.retries = timeout, retries
        self._headers = {"Content-Type": "application/json"}
        self._secret = api_key
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="icm-http")
        self._lock = threading.Lock()
        self.variants = [label_variants(w) for w in self.fmt.label_words]
        self.cache = CallCache(call_cache) if call_cache else None
        self.calls = self.tokens = self.cached_tokens = self.cache_hits = 0
        self._counts: dict[str, int] = {}
        self._tokenize: str | None = ""  # the endpoint's path prefix; "" not yet probed
        self.model, self.max_context, self.identity = self._served_model(model)

    # -- HTTP ---------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        """One keep-alive connection per worker thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = self._local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _call(
        self,
        method: str,
        endpoint: str,
        payload: dict | None,
        abort: _Abort,
        prefix: str | None = None,
    ) -> dict:
        """One request to `prefix + endpoint` (prefix: the base URL's path, e.g. /v1) with
        retries (exponential backoff with jitter, or the server's Retry-After) on 429, 5xx,
        timeouts and connection errors; any other failure, or the last retry's, is a one-line
        ServerError. Once a request of the batch has failed for good (`abort`), the others stop
        retrying."""
        path = (self.path if prefix is None else prefix) + endpoint
        url = f"{self.scheme}://{self.netloc}{path}"
        body = json.dumps(payload).encode() if payload is not None else None
        why, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                backoff = min(MAX_DELAY, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if abort.wait(max(backoff, wait)):
                    raise _Stopped()
            try:
                conn = self._connection()
                conn.request(method, path, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out
                self._drop_connection()
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if resp.status == 200:
                try:
                    body = files.loads(data.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as e:  # NaN too: not JSON
                    why = f"an answer that is not strict JSON ({e}): {data[:120]!r}"
                    continue
                if isinstance(body, dict):
                    return body
                why = f"an answer that is not a JSON object: {data[:120]!r}"
                continue
            why = f"HTTP {resp.status}: {redact(_error_text(data), self._secret)}"
            if resp.status in RETRY_STATUS:
                after = resp.getheader("Retry-After", "")
                wait = min(MAX_DELAY, float(after)) if after.replace(".", "", 1).isdigit() else 0.0
                continue
            if resp.status in (401, 403):
                why += f" (set the API key in ${API_KEY_VARS[0]} or ${API_KEY_VARS[1]})"
            if resp.status == 400 and "context" in why.lower():
                raise abort.fail(
                    ContextLengthError(
                        f"{url}: {why}: use fewer examples per batch or a longer server context"
                    )
                )
            raise abort.fail(ServerError(f"{url}: {why}", status=resp.status))
        why = redact(why, self._secret)
        raise abort.fail(
            ServerError(
                f"{url}: no usable answer after {self.retries + 1} attempts ({why}); a run keeps "
                "its last complete iteration: start the server again and continue with "
                "`icm run --resume`"
            )
        )

    def _served_model(self, name: str) -> tuple[str, int | None, dict]:
        """The model's name (when none was given: the server's only model), the context length
        the server reports for it, and what it says about the weights (a resume and the call
        cache compare it); an unreachable server fails here, early."""
        body = self._call("GET", "/models", None, _Abort())
        listed = body.get("data")
        listed = listed if isinstance(listed, list) else []
        models = {
            str(m["id"]): m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)
        }
        if name in ("", "default"):
            if len(models) != 1:
                raise ServerError(
                    f"{self.url}/models serves {sorted(models)[:10]}: pick one with --model"
                )
            name = next(iter(models))
        info = models.get(name, {})
        meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
        # vLLM and SGLang report max_model_len; llama.cpp its n_ctx under meta.
        ctx = info.get("max_model_len") or meta.get("n_ctx")
        if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1):
            raise ServerError(
                f"{self.url}/models gives the context length of {name} as {str(ctx)[:20]!r}, "
                "not a number of tokens: is this an OpenAI-compatible server?"
            )
        weights = {k: info[k] for k in ("root", "parent") if isinstance(info.get(k), str)}
        weights |= {k: v for k, v in meta.items() if "ctx" not in k and isinstance(v, int | str)}
        return name, ctx, {"backend": "openai", "model": name, **weights}

    # -- tokens -------------------------------------------------------------------------------
    def _count(self, text: str, prefix: str) -> int:
        """Tokens of `text` by the server's tokenizer, without special tokens. vLLM reads
        `prompt` and `add_special_tokens` and answers `count`; llama.cpp reads `content` (and
        adds no special tokens unless asked) and answers `tokens`."""
        payload = {"model": self.model, "prompt": text, "content": text}
        body = self._call(
            "POST", "/tokenize", {**payload, "add_special_tokens": False}, _Abort(), prefix
        )
        count = body.get("count")
        return int(count) if count is not None else len(body["tokens"])

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens of each text by the server's own tokenizer (its `/tokenize` endpoint, beside
        `/v1` or under it), memoised; None when the server has no such endpoint."""
        if self._tokenize == "":  # probe once: which path answers, if any
            self._tokenize = None
            for prefix in ("", self.path):
                try:
                    self._count("icm", prefix)
                except ServerError as e:
                    if e.status in (401, 403) or e.status is None:
                        raise  # a key or a connection problem, not a missing endpoint
                    continue
                except (KeyError, TypeError, ValueError):
                    continue  # an answer in a layout we do not know: the same as none
                self._tokenize = prefix
                break
        if self._tokenize is None:
            return None
        prefix = self._tokenize
        todo = list(dict.fromkeys(t for t in texts if t not in self._counts))
        if todo:
            try:
                counts = list(self._pool.map(lambda t: self._count(t, prefix), todo))
            except (KeyError, TypeError, ValueError) as e:
                raise ServerError(f"{self.url}: unreadable /tokenize answer ({e})") from e
            self._counts.update(zip(todo, counts, strict=True))
        return [self._counts[t] for t in texts]

    # -- scoring ------------------------------------------------------------------------------
    def _request(self, prompt: str) -> dict:
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "logprobs": self.k,
            "temperature": 0,
        }

    def _score(self, prompts: list[str]) -> np.ndarray:
        """Label log-probs of each prompt.

        The prompts are cut into `concurrency` contiguous runs, one per stream of requests; a
        stream sends its run in order, each request after the previous one is answered. In the
        leave-one-out order a run is a subtree whose prompts share long prefixes, so each
        request finds the prefix of the one before in the server's cache (llama.cpp keeps a
        cache per slot, vLLM and SGLang one for all), which prompts handed out round-robin to
        parallel requests would not.
        """
        tops: list[list[tuple[str, float]] | None] = [None] * len(prompts)
        keys = (
            [CallCache.key(self._request(p), self.identity) for p in prompts] if self.cache else []
        )
        if self.cache:
            for i, key in enumerate(keys):
                tops[i] = self.cache.get(key)
            with self._lock:
                self.cache_hits += sum(t is not None for t in tops)
        todo = [i for i, t in enumerate(tops) if t is None]
        abort = _Abort()
        used: list[tuple[int, int]] = []  # (prompt tokens, cached) of each answered request

        def stream(run: list[int]) -> None:
            for i in run:
                body = self._call("POST", "/completions", self._request(prompts[i]), abort)
                usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
                details = usage.get("prompt_tokens_details")
                details = details if isinstance(details, dict) else {}
                used.append(
                    (count(usage.get("prompt_tokens")), count(details.get("cached_tokens")))
                )
                try:
                    tops[i] = top_logprobs(body)
                except ServerError as e:
                    raise abort.fail(e) from e

        n = min(self.concurrency, len(todo))
        runs = [todo[k * len(todo) // n : (k + 1) * len(todo) // n] for k in range(n)]
        futures = [self._pool.submit(stream, run) for run in runs]
        try:
            for fut in futures:
                fut.result()
        except BaseException as e:
            abort.set()
            for fut in futures:
                fut.cancel()
            if isinstance(e, _Stopped) and abort.error:  # report the request that failed first
                raise abort.error from None
            raise
        finally:
            charge(self, len(used), sum(t for t, _ in used), sum(c for _, c in used))
            if self.cache:  # what was answered stays answered, even when the batch failed
                self.cache.put({keys[i]: tops[i] for i in todo if tops[i] is not None})
        out = np.zeros((len(prompts), 2))
        for i, top in enumerate(tops):
            assert top is not None
            out[i] = label_logprobs(top, self.variants, self.k)
        return out

    def _context(self, demos: Sequence[str], labels: Sequence[int], order: Sequence[int]) -> str:
        return self.fmt.prefix + "".join(self.fmt.demo(demos[j], labels[j]) for j in order)

    def loo_prompts(self, prompts: Sequence[str], labels: Sequence[int]) -> list[str]:
        """Prompt i: the prefix, the other demonstrations in `loo_orders(n)[i]` order, prompt i.

        Exactly the text the local backend's naive scorer tokenises."""
        orders = loo_orders(len(prompts))
        return [self._context(prompts, labels, o) + prompts[i] for i, o in enumerate(orders)]

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        return self._score(self.loo_prompts(prompts, labels))

    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        context = self._context(demos, labels, range(len(demos)))
        return self._score([context + q for q in queries])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.cache:
            self.cache.db.close()


def _error_text(data: bytes) -> str:
    """The server's error message on one line (OpenAI layout `{"error": {"message"}}` or text)."""
    try:
        err = json.loads(data).get("error", {})
        msg = err.get("message", err) if isinstance(err, dict) else err
    except (json.JSONDecodeError, AttributeError):
        msg = data.decode("utf-8", "replace")
    return " ".join(str(msg).split())[:300] or "(empty body)"
