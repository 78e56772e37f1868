"""Label words a top-k answer left out, asked for by name.

A server returns the next token's k most likely tokens. When every spelling of one label word
ranks below them, that label's mass is only bounded (`answers.label_logprobs` uses the bound),
so the score is an approximation. The OpenAI completions API has no "log-prob of token t"
request, but it has `logit_bias`: a bias of +100 on t makes t the sampled token, and servers that
report log-probs from the model's own distribution (llama.cpp; vLLM, whose default
`logprobs_mode` is the raw one) report t's unbiased log-prob with it. Whether a server does is
checked once, on a label spelling whose log-prob the top-k answer already gave; a server that
reports biased log-probs, or ignores the bias, keeps the bound, and the score is counted as
approximate."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from ..errors import ServerError

Top = list[tuple[str, float]]
BIAS = 100
"""The largest bias the OpenAI API accepts: the token is sampled whatever its probability."""
AGREE = 0.02
"""How far (in log-prob) a forced token's reported log-prob may be from the top-k one."""


def token_text(token: str) -> str:
    """Servers that return raw vocabulary pieces mark a leading space as "Ġ" or "▁"."""
    return " " + token[1:] if token[:1] in ("Ġ", "▁") else token


def missing_label(top: Sequence[tuple[str, float]], variants: Sequence[set[str]]) -> int | None:
    """The label none of whose spellings is in `top`, when the other label's is (else None)."""
    present = [any(token_text(t) in v for t, _ in top) for v in variants]
    return present.index(False) if present.count(False) == 1 else None


def forced(body: object) -> tuple[str, float]:
    """The sampled token and its log-prob from a one-token completion answer."""
    try:
        lp = body["choices"][0]["logprobs"]  # type: ignore[index]
        if lp.get("content"):
            token, value = lp["content"][0]["token"], lp["content"][0]["logprob"]
        else:
            token, value = lp["tokens"][0], lp["token_logprobs"][0]
        value = float(value)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ServerError(f"the server's answer names no sampled token ({type(e).__name__})") from e
    if not (isinstance(token, str) and math.isfinite(value) and value <= 1e-6):
        raise ServerError("the server's answer holds a sampled token with no log-prob")
    return token, value


class NamedTokens:
    """Completes a top-k answer that misses one label with the exact log-probs of every label
    spelling it left out.

    `spellings` gives each label's single-token spellings as (text, id); `send(id)` asks the
    server for the same prompt with that token forced and returns its answer."""

    def __init__(self, variants: Sequence[set[str]], spellings: Sequence[list[tuple[str, int]]]):
        self.variants = variants
        self.spellings = spellings
        self.works: bool | None = None  # None: not checked yet
        self._lock = threading.Lock()

    @classmethod
    def of(cls, variants: Sequence[set[str]], tokenize: Callable[[str], list[int]]) -> NamedTokens:
        """For each label, its spellings that are one token by `tokenize` (a server's); none
        where the server cannot tokenise (the bound then stays)."""
        try:
            spellings = [
                [(v, ids[0]) for v in sorted(vs) if len(ids := tokenize(v)) == 1] for vs in variants
            ]
        except ServerError:
            spellings = [[] for _ in variants]
        return cls(variants, spellings)

    def complete(self, top: Top, send: Callable[[int], object]) -> Top:
        gone = missing_label(top, self.variants)
        if gone is None or self.works is False or not self.spellings[gone]:
            return top
        if self.works is None:
            works = self._check(top, self.spellings[1 - gone], send)
            with self._lock:
                self.works = works if self.works is None else self.works
            if not self.works:
                return top
        # Every spelling the answer left out, of both labels: the score is then exact.
        ranked = {token_text(t) for t, _ in top}
        extra = []
        for text, token_id in [s for label in self.spellings for s in label if s[0] not in ranked]:
            token, value = forced(send(token_id))
            if token_text(token) != text:
                return top  # the bias was not honoured: keep the bound
            extra.append((token, value))
        return top + extra

    @staticmethod
    def _check(top: Top, present: list[tuple[str, int]], send: Callable[[int], object]) -> bool:
        """Whether forcing a spelling the answer already ranks reports the log-prob it gave."""
        given = {token_text(t): v for t, v in top}
        for text, token_id in present:
            if text in given:
                token, value = forced(send(token_id))
                return token_text(token) == text and abs(value - given[text]) <= AGREE
        return False
