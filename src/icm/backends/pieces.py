"""Prompts for a completion server, as token ids where its tokenizer allows.

Where the server has `/tokenize` (vLLM, SGLang and llama.cpp serve it beside `/v1`), each
demonstration and query is tokenised once, as it comes out inside the joined prompt
(`tokens.followed`), and prompts go as lists of ids: the server neither receives nor tokenises
the same text again, and the ids are those the local backend scores. Before the first prompt
with a demonstration, the pieces joined are compared with the tokens of the whole text; where
they differ, or the server has no tokenizer, prompts go as text."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ..core.data import PromptFormat
from ..errors import ServerError
from .http import Client
from .tokens import followed

Prompt = tuple
"""A prompt as token ids (ints), or as one text (a 1-tuple of str) when the server has no
tokenizer endpoint."""


def join(parts: Sequence[Prompt]) -> Prompt:
    """Prompt pieces one after the other."""
    if parts and parts[0] and isinstance(parts[0][0], str):
        return ("".join(p[0] for p in parts if p),)
    return tuple(t for p in parts for t in p)


class ServerPieces:
    """The pieces of prompts (prefix, demonstrations, queries) for one server and format."""

    def __init__(self, client: Client, model: str, fmt: PromptFormat, token_ids: bool) -> None:
        self.client, self.model, self.fmt = client, model, fmt
        self.ids: bool | None = None if token_ids else False  # None: not probed yet
        self._ids: dict[tuple[str, bool], list[int]] = {}
        self._pieces: dict[tuple[str, int], Prompt] = {}
        self._checked = False

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text` by the server's tokenizer (its `/tokenize`, beside `/v1`),
        memoised. vLLM reads `prompt` and `add_special_tokens`, llama.cpp `content` and
        `add_special`: both are sent."""
        key = (text, special)
        if key not in self._ids:
            payload: dict[str, Any] = {"model": self.model, "prompt": text, "content": text}
            payload |= {"add_special_tokens": special, "add_special": special}
            body = self.client.call("POST", "/tokenize", payload, root=True)
            ids = body.get("tokens")
            if not (isinstance(ids, list) and all(type(t) is int for t in ids)):
                raise ServerError(f"{self.client.url}: /tokenize answered without token ids")
            self._ids[key] = ids
        return self._ids[key]

    def available(self) -> bool:
        """Whether the server tokenises for us (probed once: a missing endpoint is no error)."""
        if self.ids is None:
            try:
                self.tokenize("icm")
                self.ids = True
            except ServerError as e:
                if e.status in (401, 403) or e.status is None and "no usable answer" in str(e):
                    raise  # a key or a connection problem, not a missing endpoint
                self.ids = False
        return self.ids

    def detokenize(self, ids: list[int]) -> str:
        """The text of `ids` with outer white space dropped; "" where the server has no
        /detokenize (the joined-prompt check in `decide` then has the last word)."""
        try:
            payload = {"model": self.model, "tokens": ids}
            last = self.client.call("POST", "/detokenize", payload, root=True)
        except ServerError:
            return ""
        if not isinstance(last, dict):
            return ""
        return str(last.get("content") or last.get("prompt") or "").strip()

    def piece(self, text: str, label: int) -> Prompt:
        """A demonstration (label 0/1), the bare query (label -1), or the format's prefix
        (label -2, with the BOS token the tokenizer adds), as ids or as text."""
        key = (text, label)
        if key not in self._pieces:
            if not self.ids:
                piece: Prompt = (self.fmt.demo(text, label) if label >= 0 else text,)
            elif label == -2:
                special = self.tokenize("a", special=True)
                bos = special[:1] if len(special) > len(self.tokenize("a")) else []
                piece = tuple(bos + followed(text, self.tokenize, self.detokenize))
            elif label == -1:
                piece = tuple(self.tokenize(text))
            else:
                demo = self.fmt.demo(text, label)
                piece = tuple(followed(demo, self.tokenize, self.detokenize))
            self._pieces[key] = piece
        return self._pieces[key]

    def decide(self, query: str, demo: str | None = None, label: int = 1) -> None:
        """Decide between token ids and text before the first prompt with a demonstration goes
        out: ids only when the pieces joined give exactly the tokens of the whole text."""
        if not self.available() or self._checked or demo is None:
            return
        self._checked = True
        whole = self.fmt.prefix + self.fmt.demo(demo, label) + query
        joined = join(
            [self.piece(self.fmt.prefix, -2), self.piece(demo, label), self.piece(query, -1)]
        )
        if list(joined) != self.tokenize(whole, special=True):
            warnings.warn(
                f"{self.client.url}: the server's tokenizer splits joined prompts differently "
                "from their pieces: prompts go as text",
                stacklevel=3,
            )
            self.ids = False
            self._pieces.clear()
