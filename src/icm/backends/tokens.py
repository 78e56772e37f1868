"""How a prompt's pieces are tokenised, shared by every backend and by fine-tuning.

A prompt is scored as pieces (the format's prefix, each demonstration, the query) whose ids are
cached and concatenated. A BPE tokenizer splits trailing white space by what comes next, so a
piece is tokenised with a probe letter after it, which is then dropped: the ids are the ones the
piece has inside the whole prompt."""

from __future__ import annotations

from collections.abc import Callable

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
