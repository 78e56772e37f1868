"""One prompt's answer from a completion server.

The request for the next token's top-k log-probs, the answer read back (a layout that does not
match the request is refused), the two labels' log-probs from it, and where an answer comes from:
a memo of recent answers, the call cache, or the server, asking for a left-out label by name.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ServerError
from .caching import CallCache, logprob
from .http import Abort, Client
from .named import BIAS, NamedTokens, missing_label, token_text
from .pieces import Prompt, ServerPieces

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
    position, at most `k` tokens (and the sampled one), each once (distinct tokens may share a
    text, and then count as that text's mass); anything else (the prompt's positions echoed,
    more tokens than asked) would be read as the wrong distribution, and is refused."""
    try:
        lp = body["choices"][0]["logprobs"]
        if lp.get("content"):
            positions = lp["content"]
            entries = positions[0]["top_logprobs"]
            top = [(e["token"], e["logprob"]) for e in entries]
            # Distinct tokens may share a text (byte pieces of one character decode alike):
            # a token is its id, else its bytes, else its text.
            ids = [repr(e.get("id", e.get("bytes", e["token"]))) for e in entries]
        else:
            positions = lp["top_logprobs"]
            top = list(positions[0].items())
            ids = [str(t) for t, _ in top]
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
    if (k is not None and len(out) > k + 1) or len(set(ids)) < len(ids):
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


def prompt_key(prompt: Prompt) -> bytes:
    """A short key for a prompt (prompts run to tens of thousands of tokens)."""
    data = prompt[0].encode() if prompt and isinstance(prompt[0], str) else repr(prompt).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def top_list(a: object) -> bool:
    """A stored answer: a list of [token, log-prob] pairs, the token text, the log-prob finite."""
    return isinstance(a, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and logprob(p[1]) for p in a
    )


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


class Answers:
    """Each prompt's top log-probs from the server, asked once: from a memo of recent answers,
    else the call cache (keyed by the request and what the server says its weights are), else a
    request; where the top k hold one label word only, the other's spellings are asked for by
    name (`named.NamedTokens`). `cache_hits` counts the answers the call cache gave."""

    def __init__(
        self, client: Client, model: str, k: int, pieces: ServerPieces, identity: dict
    ) -> None:
        self.client, self.model, self.k = client, model, k
        self.pieces, self.identity = pieces, identity
        self.variants = [label_variants(w) for w in pieces.fmt.label_words]
        self.cache: CallCache | None = None
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._memo = Recent(MEMO)
        self._named: NamedTokens | None = None

    def request(self, prompt: Prompt, scored: bool = True, force: int | None = None) -> dict:
        """The /completions request for one next token after `prompt` (with token `force`
        forced, when given)."""
        text = isinstance(prompt[0], str) if prompt else False
        request = {
            "model": self.model,
            "prompt": prompt[0] if text else list(prompt),
            "max_tokens": 1,
            "logprobs": self.k if scored and force is None else 1,
            "temperature": 0,
        }
        return request | ({"logit_bias": {str(force): BIAS}} if force is not None else {})

    def send(
        self,
        prompt: Prompt,
        abort: Abort,
        used: list,
        scored: bool = True,
        force: int | None = None,
    ) -> dict:
        """The server's answer; `used` gets the (prompt tokens, cached tokens) it reports."""
        body = self.client.call("POST", "/completions", self.request(prompt, scored, force), abort)
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        used.append((count(usage.get("prompt_tokens")), count(details.get("cached_tokens"))))
        return body

    def ask(self, prompt: Prompt, abort: Abort, used: list) -> list[tuple[str, float]]:
        """The top log-probs after `prompt`: from the memo, the call cache, or the server."""
        digest = prompt_key(prompt)
        top = self._memo.get(digest)
        if top is not None:
            return top
        key = CallCache.key(self.request(prompt), self.identity) if self.cache else ""
        hit = self.cache.get(key, top_list) if self.cache else None
        top = [(str(t), float(v)) for t, v in hit] if hit is not None else None
        if top is not None:
            with self._lock:
                self.cache_hits += 1
        else:
            try:
                top = self._server(prompt, abort, used)
            except ServerError as e:
                raise abort.fail(e) from e
            if self.cache:
                self.cache.put(key, top)
        self._memo.put(digest, top)
        return top

    def _server(self, prompt: Prompt, abort: Abort, used: list) -> list[tuple[str, float]]:
        top = top_logprobs(self.send(prompt, abort, used), self.k)
        if missing_label(top, self.variants) is None or self.pieces.ids is False:
            return top
        if self._named is None:
            self._named = NamedTokens.of(self.variants, self.pieces.tokenize)
        return self._named.complete(top, lambda i: self.send(prompt, abort, used, force=i))

    def score(self, top: list[tuple[str, float]], bounded: list[bool]) -> np.ndarray:
        """The label log-probs of one answer; notes whether one label's mass is only bounded."""
        bounded.append(missing_label(top, self.variants) is not None)
        return label_logprobs(top, self.variants, self.k)
