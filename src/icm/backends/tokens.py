"""How a prompt's pieces are tokenised, shared by every backend and by fine-tuning.

A prompt is scored as pieces (the format's prefix, each demonstration, the query) whose ids are
cached and concatenated. A BPE tokenizer splits trailing white space by what comes next, so a
piece is tokenised with a probe letter after it, which is then dropped: the ids are the ones the
piece has inside the whole prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.data import PromptFormat

PROBE = "X"


def followed(
    text: str, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]
) -> list[int]:
    """Ids of `text` as they come out when more text follows it; `encode` adds no special
    tokens, `decode` reads back the last id (where it cannot, the plain encoding is kept)."""
    if not text:
        return []
    ids = encode(text + PROBE)
    if ids and decode(ids[-1:]) == PROBE:
        return ids[:-1]
    return encode(text)


def hf_bos(tok) -> list[int]:
    """The BOS id a Hugging Face tokenizer puts before a prompt, if it puts one."""
    bos = tok.bos_token_id
    return [bos] if bos is not None and tok("a").input_ids[:1] == [bos] else []


def hf_head(tok, prefix: str) -> list[int]:
    """The ids every prompt starts with: BOS where the tokenizer adds one, then the prefix."""
    return hf_bos(tok) + followed(
        prefix, lambda t: tok.encode(t, add_special_tokens=False), tok.decode
    )


class LocalPieces:
    """A local tokenizer's ids for the pieces of prompts (prefix, demonstrations, queries).

    Pieces are tokenised on their own, memoised and concatenated, so the divide and conquer can
    reuse them; a piece that something follows is tokenised as `followed` says, so the ids
    equal those of the whole prompt (checked once by `joined_as_whole`)."""

    def __init__(self, tok, fmt: PromptFormat) -> None:  # type: ignore[no-untyped-def]
        self.tok, self.fmt = tok, fmt
        self.prefix = hf_head(tok, fmt.prefix)
        self._ids: dict[tuple[str, int], list[int]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text alone."""
        if not texts:
            return []
        return [len(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def piece(self, prompt: str, label: int) -> list[int]:
        """Token ids of a demonstration (label 0/1) or of the bare query (label -1), memoised."""
        key = (prompt, label)
        ids = self._ids.get(key)
        if ids is None:
            if label < 0:
                ids = self.encode(prompt)
            else:
                ids = followed(self.fmt.demo(prompt, label), self.encode, self.tok.decode)
            self._ids[key] = ids
        return ids

    def joined_as_whole(self, prompts: Sequence[str], labels: Sequence[int]) -> bool:
        """Whether concatenated piece ids equal the ids of the whole prompt text for these
        examples (the first example scored after the others)."""
        demos = [self.fmt.demo(p, y) for p, y in zip(prompts[1:], labels[1:], strict=True)]
        whole = self.tok(self.fmt.prefix + "".join(demos) + prompts[0]).input_ids
        pieces = list(self.prefix)
        for p, y in zip(prompts[1:], labels[1:], strict=True):
            pieces += self.piece(p, y)
        return whole == pieces + self.piece(prompts[0], -1)
