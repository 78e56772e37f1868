"""An OpenAI-compatible completion server (vLLM, SGLang, llama.cpp) as the model.

Each leave-one-out term is one `/completions` request for the next token's top-k log-probs
(`max_tokens=1`, `logprobs=k`), built in the divide-and-conquer order of
`icm.core.data.loo_orders`: the prompts of one subtree share the subtree's context as a prefix,
which a server with prefix caching computes once.

- Token ids. Where the server has `/tokenize` (vLLM, SGLang, llama.cpp), each demonstration and
  query is tokenised once, as it comes out inside the joined prompt, and prompts go as lists of
  token ids: the server neither receives nor tokenises the same text again, and the tokens are
  those the local backend scores. A server without it gets text.
- Cache-aware scheduling. `concurrency` requests run at once by splitting the tree: before the two
  halves of a node go to two streams, one request computes the node's shared context, so both
  halves find it cached whatever their order of arrival. Within a stream, requests follow the
  tree order, each extending the one before.
- Identical prompts are answered once per process (a small memo) and, with `call_cache`, once
  ever: a SQLite file keyed by the request and what the server reports about its weights.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.data import PromptFormat, loo_orders
from ..core.model import LabelModel, charge, charge_scores
from ..errors import ServerError, Stopped
from .caching import CallCache
from .http import API_KEY_VARS, Abort, Client, api_key_from_env, redact
from .named import BIAS, NamedTokens, missing_label, token_text
from .options import OpenAIOptions
from .pieces import Prompt, ServerPieces, join

__all__ = ["API_KEY_VARS", "OpenAIModel", "api_key_from_env", "label_logprobs", "redact"]

MEMO = 8192
"""Answers kept in memory: a proposal that flips one label re-asks many identical prompts."""


def label_variants(word: str) -> set[str]:
    """The token texts that count as a label word: " True", "True", " true", "TRUE"...

    Only exact spellings count, never tokens that merely contain the word (" untrue")."""
    base = word.strip()
    forms = {base, base.lower(), base.capitalize(), base.upper()}
    return {p + f for f in forms for p in ("", " ")}


def top_logprobs(body: dict, k: int | None = None) -> list[tuple[str, float]]:
    """The next token's top-k (token text, log-prob) pairs from a completion response.

    Reads vLLM's and SGLang's legacy layout (`logprobs.top_logprobs[0]`, a dict token -> logprob)
    and llama.cpp's chat-style one (`logprobs.content[0].top_logprobs`, a list of
    `{id, token, bytes, logprob}`). The layout must be the one asked for: one generated
    position, at most `k` tokens (and the sampled one), each once; anything else (the prompt's
    positions echoed, more tokens than asked) would be read as the wrong distribution, and is
    refused."""
    try:
        lp = body["choices"][0]["logprobs"]
        if lp.get("content"):
            positions = lp["content"]
            top = [(e["token"], e["logprob"]) for e in positions[0]["top_logprobs"]]
        else:
            positions = lp["top_logprobs"]
            top = list(positions[0].items())
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
    if len(positions) != 1:
        raise ServerError(
            f"the server's answer holds log-probs for {len(positions)} positions where one "
            "token was asked for (is it echoing the prompt?)"
        )
    # The legacy API may add the sampled token to the top k: up to k + 1 entries.
    if (k is not None and len(out) > k + 1) or len({t for t, _ in out}) < len(out):
        raise ServerError(
            f"the server's answer lists {len(out)} top tokens (some twice?) where {k} were "
            "asked for: not the layout of an OpenAI-compatible /completions answer"
        )
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
        lps = [lp for t, lp in top if token_text(t) in v]
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


def both(first, second) -> None:
    """Run two calls at once (the first on a new thread); the first error is raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            first()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        second()
    finally:
        thread.join()
    if errors:
        raise errors[0]


def served_model(client: Client, name: str) -> tuple[str, int | None, dict]:
    """The model's name (when none was given: the server's only model), the context length
    the server reports for it, and what it says about the weights (a resume and the call
    cache compare it); an unreachable server fails here, early."""
    body = client.call("GET", "/models")
    listed = body.get("data")
    listed = listed if isinstance(listed, list) else []
    models = {
        str(m["id"]): m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)
    }
    if name in ("", "default"):
        if len(models) != 1:
            raise ServerError(
                f"{client.url}/models serves {sorted(models)[:10]}: pick one with --model"
            )
        name = next(iter(models))
    info = models.get(name, {})
    meta = info.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    # vLLM and SGLang report max_model_len; llama.cpp its n_ctx under meta.
    ctx = info.get("max_model_len") or meta.get("n_ctx")
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1):
        raise ServerError(
            f"{client.url}/models gives the context length of {name} as {str(ctx)[:20]!r}, "
            "not a number of tokens: is this an OpenAI-compatible server?"
        )
    weights = {k: info[k] for k in ("root", "parent") if isinstance(info.get(k), str)}
    weights |= {k: v for k, v in meta.items() if "ctx" not in k and isinstance(v, int | str)}
    return name, ctx, {"backend": "openai", "model": name, **weights}


def prompt_key(prompt: Prompt) -> bytes:
    """A short key for a prompt (prompts run to tens of thousands of tokens)."""
    data = prompt[0].encode() if prompt and isinstance(prompt[0], str) else repr(prompt).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


class Recent:
    """The last `size` keys used, with their values (thread-safe): answers, warmed contexts."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def first(self, key: bytes) -> bool:
        """Whether `key` is new (and now recorded)."""
        with self._lock:
            if key in self._items:
                return False
        self.put(key, True)
        return True


class OpenAIModel(LabelModel):
    """A model behind an OpenAI-compatible completions endpoint. Implements `LabelModel`.

    `calls` and `tokens` count requests sent and their prompt tokens as the server reports them;
    `cached_tokens` the prompt tokens the server says it took from its prefix cache;
    `cache_hits` the answers taken from the call cache instead of the server. `parallel` tells
    the search how many scoring calls may usefully run at once.
    """

    identity: dict[str, Any]  # always set, by `_served_model`

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
        token_ids: bool = True,
    ) -> None:
        self.client = Client(base_url, api_key, timeout, retries)
        self.url = self.client.url
        self.fmt = fmt or PromptFormat()
        self.k = top_logprobs
        self.concurrency = self.parallel = max(1, concurrency)
        self.variants = [label_variants(w) for w in self.fmt.label_words]
        self.cache = CallCache(call_cache) if call_cache else None
        self.calls = self.tokens = self.cached_tokens = self.cache_hits = 0
        self._lock = threading.Lock()
        self._memo = Recent(MEMO)
        self._warmed = Recent(MEMO)
        self._named: NamedTokens | None = None
        self.model, self.max_context, self.identity = served_model(self.client, model)
        self.pieces = ServerPieces(self.client, self.model, self.fmt, token_ids)

    def cached(self, cache: CallCache) -> OpenAIModel:
        """Keeps each request's answer: prompts shared by different calls are asked once."""
        self.cache = cache
        return self

    def describe(self) -> str:
        tokens = "token ids" if self.pieces.ids else "text"
        return f"{self.url}, {self.concurrency} stream(s) per search, prompts as {tokens}"

    # -- tokens --------------------------------------------------------------------------------
    def has_tokenizer(self) -> bool:
        """Whether the server tokenises for us (probed once: a missing endpoint is no error)."""
        return self.pieces.available()

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens of each text by the server's own tokenizer; None when it has no endpoint."""
        if not self.has_tokenizer():
            return None
        return [len(self.pieces.tokenize(t)) for t in texts]

    def _piece(self, text: str, label: int) -> Prompt:
        return self.pieces.piece(text, label)

    # -- requests ------------------------------------------------------------------------------
    def _request(self, prompt: Prompt, scored: bool = True, force: int | None = None) -> dict:
        text = isinstance(prompt[0], str) if prompt else False
        request = {
            "model": self.model,
            "prompt": prompt[0] if text else list(prompt),
            "max_tokens": 1,
            "logprobs": self.k if scored and force is None else 1,
            "temperature": 0,
        }
        return request | ({"logit_bias": {str(force): BIAS}} if force is not None else {})

    def _send(
        self,
        prompt: Prompt,
        abort: Abort,
        used: list,
        scored: bool = True,
        force: int | None = None,
    ) -> dict:
        request = self._request(prompt, scored, force)
        body = self.client.call("POST", "/completions", request, abort)
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        used.append((count(usage.get("prompt_tokens")), count(details.get("cached_tokens"))))
        return body

    def _ask(self, prompt: Prompt, abort: Abort, used: list) -> list[tuple[str, float]]:
        """The top log-probs after `prompt`: from the memo, the call cache, or the server."""
        digest = prompt_key(prompt)
        top = self._memo.get(digest)
        if top is not None:
            return top
        key = CallCache.key(self._request(prompt), self.identity) if self.cache else ""
        hit = self.cache.get(key) if self.cache else None
        top = [(str(t), float(v)) for t, v in hit] if hit is not None else None
        if top is not None:
            with self._lock:
                self.cache_hits += 1
        else:
            try:
                top = top_logprobs(self._send(prompt, abort, used), self.k)
                if missing_label(top, self.variants) is not None and self.pieces.ids is not False:
                    if self._named is None:
                        self._named = NamedTokens.of(self.variants, self.pieces.tokenize)
                    named = self._named
                    top = named.complete(top, lambda i: self._send(prompt, abort, used, force=i))
            except ServerError as e:
                raise abort.fail(e) from e
            if self.cache:
                self.cache.put(key, top)
        self._memo.put(digest, top)
        return top

    def _score(self, top: list[tuple[str, float]], bounded: list[bool]) -> np.ndarray:
        """The label log-probs of one answer; notes whether one label's mass is only bounded."""
        bounded.append(missing_label(top, self.variants) is not None)
        return label_logprobs(top, self.variants, self.k)

    def _warm(self, context: Prompt, abort: Abort, used: list) -> None:
        """Have the server compute `context` once, before several streams extend it. The label
        word goes after it (it never follows a context in a scored prompt), so the request is
        never a prompt the server has fully cached, whose last token it would compute again."""
        if len(context) < 2 or not self._warmed.first(prompt_key(context)):
            return
        word = self.fmt.label_words[1]
        tail = tuple(self.pieces.tokenize(word)) if self.pieces.ids else (word,)
        self._send(join([context, tail]), abort, used, scored=False)

    def _run(self, work, abort: Abort, used: list, bounded: list[bool]) -> None:
        """Run `work(abort, used)`; charge what the server did (and how many scores it gave, how
        many of them approximate), and report the request that failed first rather than the
        others it stopped."""
        try:
            work()
        except Stopped:
            if abort.error:
                raise abort.error from None
            raise
        finally:
            charge(self, len(used), sum(t for t, _ in used), sum(c for _, c in used))
            charge_scores(self, len(bounded), sum(bounded))

    def loo_prompts(self, prompts: Sequence[str], labels: Sequence[int]) -> list[Prompt]:
        """Leave-one-out prompt i as sent: the prefix, the other demonstrations in
        `loo_orders(n)[i]` order, then prompt i (token ids, or a 1-tuple of text)."""
        if len(prompts) > 1:
            self.pieces.decide(prompts[0], prompts[1], labels[1])
        prefix = self._piece(self.fmt.prefix, -2)
        demo = [self._piece(p, y) for p, y in zip(prompts, labels, strict=True)]
        return [
            join([prefix, *(demo[j] for j in order), self._piece(prompts[i], -1)])
            for i, order in enumerate(loo_orders(len(prompts)))
        ]

    # -- LabelModel ----------------------------------------------------------------------------
    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        n = len(prompts)
        out = np.zeros((n, 2))
        if n == 0:
            return out
        if n > 1:
            self.pieces.decide(prompts[0], prompts[1], labels[1])
        demo = [self._piece(p, y) for p, y in zip(prompts, labels, strict=True)]
        query = [self._piece(p, -1) for p in prompts]
        abort = Abort()
        used: list[tuple[int, int]] = []
        bounded: list[bool] = []

        def tree(lo: int, hi: int, context: Prompt, streams: int) -> None:
            # The loo_orders tree: items lo..hi-1 after `context`; each half after the other.
            if hi - lo == 1:
                top = self._ask(join([context, query[lo]]), abort, used)
                out[lo] = self._score(top, bounded)
                return
            mid = (lo + hi) // 2
            left = join([context, *demo[mid:hi]])
            right = join([context, *demo[lo:mid]])
            if streams < 2:
                tree(lo, mid, left, 1)
                tree(mid, hi, right, 1)
                return
            self._warm(context, abort, used)
            half = streams // 2
            both(lambda: tree(lo, mid, left, half), lambda: tree(mid, hi, right, streams - half))

        prefix = self._piece(self.fmt.prefix, -2)
        self._run(lambda: tree(0, n, prefix, self.concurrency), abort, used, bounded)
        return out

    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        out = np.zeros((len(queries), 2))
        if not len(queries):
            return out
        if len(demos):
            self.pieces.decide(queries[0], demos[0], labels[0])
        context = join(
            [self._piece(self.fmt.prefix, -2)]
            + [self._piece(p, y) for p, y in zip(demos, labels, strict=True)]
        )
        abort = Abort()
        used: list[tuple[int, int]] = []
        bounded: list[bool] = []

        def span(lo: int, hi: int, streams: int) -> None:
            if streams < 2 or hi - lo == 1:
                for i in range(lo, hi):
                    top = self._ask(join([context, self._piece(queries[i], -1)]), abort, used)
                    out[i] = self._score(top, bounded)
                return
            mid = (lo + hi) // 2
            half = streams // 2
            both(lambda: span(lo, mid, half), lambda: span(mid, hi, streams - half))

        def work() -> None:
            if self.concurrency > 1 and len(queries) > 1:
                self._warm(context, abort, used)
            span(0, len(queries), self.concurrency)

        self._run(work, abort, used, bounded)
        return out

    def close(self) -> None:
        if self.cache:
            self.cache.close()


def from_options(name: str, opts: OpenAIOptions, fmt: PromptFormat) -> OpenAIModel:
    """The served model `name` with a run's openai options (the backend registry's builder)."""
    return OpenAIModel(
        opts.base_url,
        name,
        fmt=fmt,
        top_logprobs=opts.top_logprobs,
        concurrency=opts.concurrency,
        timeout=opts.timeout,
        retries=opts.retries,
        api_key=api_key_from_env(),
    )
