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
  ever: a SQLite file keyed by the request and what the server reports about its weights. What
  is asked and how an answer is read live in `answers.py`; this module schedules the requests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.data import PromptFormat, loo_orders
from ..core.model import LabelModel, charge, charge_scores
from ..errors import ServerError, Stopped
from .answers import MEMO, Answers, Recent, prompt_key
from .caching import CallCache
from .http import API_KEY_VARS, Abort, Client, api_key_from_env, redact
from .options import OpenAIOptions
from .pieces import Prompt, ServerPieces, join

__all__ = ["API_KEY_VARS", "OpenAIModel", "api_key_from_env", "redact"]


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
        self.concurrency = self.parallel = max(1, concurrency)
        self.calls = self.tokens = self.cached_tokens = 0
        self._warmed = Recent(MEMO)
        self.model, self.max_context, self.identity = served_model(self.client, model)
        self.pieces = ServerPieces(self.client, self.model, self.fmt, token_ids)
        self.answers = Answers(self.client, self.model, top_logprobs, self.pieces, self.identity)
        if call_cache:
            self.cached(CallCache(call_cache))

    def cached(self, cache: CallCache) -> OpenAIModel:
        """Keeps each request's answer: prompts shared by different calls are asked once."""
        self.answers.cache = cache
        return self

    @property
    def cache_hits(self) -> int:
        """Answers the call cache gave instead of the server."""
        return self.answers.cache_hits

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
    def _warm(self, context: Prompt, abort: Abort, used: list) -> None:
        """Have the server compute `context` once, before several streams extend it. The label
        word goes after it (it never follows a context in a scored prompt), so the request is
        never a prompt the server has fully cached, whose last token it would compute again."""
        if len(context) < 2 or not self._warmed.first(prompt_key(context)):
            return
        word = self.fmt.label_words[1]
        tail = tuple(self.pieces.tokenize(word)) if self.pieces.ids else (word,)
        self.answers.send(join([context, tail]), abort, used, scored=False)

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
                top = self.answers.ask(join([context, query[lo]]), abort, used)
                out[lo] = self.answers.score(top, bounded)
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
                    prompt = join([context, self._piece(queries[i], -1)])
                    out[i] = self.answers.score(self.answers.ask(prompt, abort, used), bounded)
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
        if self.answers.cache:
            self.answers.cache.close()


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
