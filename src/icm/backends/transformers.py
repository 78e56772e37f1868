"""Local models through Hugging Face transformers: exact leave-one-out scoring over the KV cache.

`TransformersModel(model, tokenizer)` wraps objects you already built;
`TransformersModel.load(name)`
takes a Hugging Face id, a local folder, a GGUF file or "default" (the embedded SmolLM2-135M).
Loading lives in `loading.py`, packing a subtree into one pass in `packing.py`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..core.data import PromptFormat, loo_orders
from ..core.model import LabelModel, charge
from ..errors import ContextLengthError, ModelError
from .loading import (
    DEFAULT_MODEL,
    load_pretrained,
    pick_device,
    pick_dtype,
    set_threads,
    sliding_window,
    weights_signature,
)
from .options import SCORERS, TransformersOptions
from .packing import Packed, Sizes, default_pack
from .tokens import LocalPieces


def label_token_ids(tokenizer, word: str) -> list[int]:
    """Single-token spellings of a label word: " True", "True", " true", "true", " TRUE"...

    Only exact case variants count: summing every token that contains "true" would catch " untrue".
    """
    base = word.strip()
    ids: set[int] = set()
    for w in {base, base.lower(), base.capitalize(), base.upper()}:
        for v in (w, " " + w):
            enc = tokenizer.encode(v, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    if not ids:
        raise ModelError(f"label word {word!r} is not a single token for this tokenizer")
    return sorted(ids)


@contextmanager
def memory_errors(device: torch.device, what: str, lower: str) -> Iterator[None]:
    """Running out of memory in a forward pass is one line that says what to lower (a CUDA
    torch.OutOfMemoryError is a RuntimeError too)."""
    try:
        yield
    except RuntimeError as e:
        if not any(m in str(e) for m in ("out of memory", "can't allocate memory")):
            raise
        raise ModelError(
            f"out of memory on {device} running {what}: lower {lower}, or use a smaller --dtype "
            "(bfloat16)"
        ) from e


class Forward:
    """Forward passes over a KV cache, each charged to `owner`: one sequence's last position, or a
    packed tree's leaves; either way the two labels' log-probs (normalised over the two)."""

    def __init__(self, model, label_ids: list[list[int]], owner: LabelModel) -> None:
        self.model, self.label_ids, self.owner = model, label_ids, owner
        # With a device map the inputs go where the embeddings are; layers move them on.
        self.device = model.get_input_embeddings().weight.device
        # transformers 5.x renames `past_key_values` to `cache`; use whichever this version takes.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def labels(self, logits: torch.Tensor) -> np.ndarray:
        logp = torch.log_softmax(logits, dim=-1)
        mass = torch.stack([torch.logsumexp(logp[ids], dim=0) for ids in self.label_ids])
        return (mass - torch.logsumexp(mass, dim=0)).cpu().double().numpy()

    @torch.inference_mode()
    def last(self, ids: list[int], cache) -> torch.Tensor:
        """Run `ids` on top of `cache` (appending to it); the last position's logits."""
        x = torch.tensor([ids], device=self.device)
        with memory_errors(self.device, f"{len(ids)} tokens", "--batch-size or --context-tokens"):
            kw = {self.cache_arg: cache}
            out = self.model(input_ids=x, use_cache=True, logits_to_keep=1, **kw)
        charge(self.owner, 1, len(ids))
        return out.logits[0, -1].float()

    def score(self, ids: list[int], cache=None) -> np.ndarray:
        """The label log-probs after `ids` on top of `cache` (a fresh one when None)."""
        return self.labels(self.last(ids, self.new_cache() if cache is None else cache))

    @torch.inference_mode()
    def packed(self, tree: Packed, cache) -> dict[int, np.ndarray]:
        """Run a packed tree of segments on top of `cache` in one forward pass (then crop the
        cache back); the label log-probs at each leaf's last position, by its index."""
        past = cache.get_seq_length()
        dtype = next(self.model.parameters()).dtype
        ids, mask, positions = tree.inputs(past, self.device, dtype)
        q, leaves = len(ids), tree.leaf_positions()
        kw = {self.cache_arg: cache}
        lower = "--pack-tokens, --batch-size or --context-tokens"
        try:
            with memory_errors(self.device, f"{q} packed tokens", lower):
                result = self.model(
                    input_ids=ids[None],
                    attention_mask=mask[None, None],
                    position_ids=positions[None],
                    use_cache=True,
                    logits_to_keep=torch.tensor(list(leaves.values()), device=self.device),
                    **kw,
                )
        finally:
            grown = cache.get_seq_length() - past
            if grown > 0:
                cache.crop(-grown)
        charge(self.owner, 1, q)
        logits = result.logits[0].float()
        return {leaf: self.labels(logits[k]) for k, leaf in enumerate(leaves)}


class TransformersModel(LabelModel):
    """A causal LM scored locally. Implements `icm.core.model.LabelModel`."""

    def __init__(
        self,
        model,
        tokenizer,
        fmt: PromptFormat | None = None,
        scorer: str = "dc",
        max_context: int | None = None,
        pack_tokens: int | None = None,
    ) -> None:
        if scorer not in SCORERS:
            raise ModelError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
        self.model = model.eval()
        self.tok = tokenizer
        self.fmt = fmt or PromptFormat()
        self.scorer = scorer
        self.label_ids = [label_token_ids(tokenizer, w) for w in self.fmt.label_words]
        self.run = Forward(self.model, self.label_ids, self)
        self.device = self.run.device
        self.pack_tokens = default_pack(self.device) if pack_tokens is None else pack_tokens
        self.max_context = max_context or model.config.to_dict().get("max_position_embeddings")
        self.window = sliding_window(model.config)
        if self.window and scorer == "dc" and (self.max_context or 1e18) > self.window:
            # Each divide-and-conquer branch crops the cache back, which a window that has
            # dropped old tokens cannot do: batches are cut to fit the window instead.
            self.max_context = self.window
        self.pieces = LocalPieces(tokenizer, self.fmt)
        self.prefix_ids = self.pieces.prefix
        self._checked = False
        self.calls = self.tokens = self.cached_tokens = 0
        self.identity: dict[str, Any] = {
            "backend": "transformers",
            "model": model.config.name_or_path,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "weights": weights_signature(model),
        }

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        fmt: PromptFormat | None = None,
        scorer: str = "dc",
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        device_map: str | None = None,
        pack_tokens: int | None = None,
    ) -> TransformersModel:
        """`device_map="auto"` places the layers over every GPU (and CPU memory) there is, for
        a model larger than one GPU; otherwise the whole model goes to `device`."""
        where = pick_device(device)
        dtype = pick_dtype(dtype, where)
        kw = {"device_map": device_map} if device_map else {}
        tok, model = load_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code, **kw)
        if not device_map:
            model = model.to(where)
        return cls(model, tok, fmt=fmt, scorer=scorer, pack_tokens=pack_tokens)

    def describe(self) -> str:
        """Where and how it runs, for the first line a run prints."""
        where = f"{self.device}, {self.identity['dtype']}"
        if self.device.type == "cpu":
            n = torch.get_num_threads()
            where += f", {n} CPU thread{'s' if n > 1 else ''} (--threads)"
        return where

    # -- tokens -------------------------------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text alone (batching uses them to fit batches into the context)."""
        return self.pieces.counts(texts)

    def _piece(self, prompt: str, label: int) -> list[int]:
        return self.pieces.piece(prompt, label)

    def check_tokenisation(self, prompts: Sequence[str], labels: Sequence[int]) -> bool:
        return self.pieces.joined_as_whole(prompts, labels)

    def _check_length(self, demos: Sequence[str], labels: Sequence[int], extra: int) -> None:
        total = len(self.prefix_ids) + extra
        total += sum(len(self._piece(p, y)) for p, y in zip(demos, labels, strict=True))
        if self.window and self.scorer == "dc" and total > self.window:
            raise ContextLengthError(
                f"the prompt needs {total} tokens but this model attends to its last "
                f"{self.window} only (sliding window), which the divide-and-conquer scorer cannot "
                "crop back: use fewer examples per batch (--batch-size or --context-tokens) or "
                "--scorer naive"
            )
        if self.max_context and total > self.max_context:
            raise ContextLengthError(
                f"the prompt needs {total} tokens but the model's context is {self.max_context}: "
                "use fewer examples per batch (--batch-size or --context-tokens) or a model "
                "with a longer context"
            )

    # -- LabelModel ---------------------------------------------------------------------------
    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        n = len(prompts)
        out = np.zeros((n, 2))
        if n == 0:
            return out
        longest = max(len(self._piece(p, -1)) for p in prompts)
        self._check_length(prompts, labels, longest)
        if not self._checked and n > 1:
            self._checked = True
            if not self.check_tokenisation(prompts[:3], labels[:3]):
                warnings.warn(
                    "this tokeniser splits the joined prompt differently from its pieces: "
                    "scores are exact for the piecewise tokens, not for the whole text",
                    stacklevel=2,
                )
        demo = [self._piece(p, y) for p, y in zip(prompts, labels, strict=True)]
        query = [self._piece(p, -1) for p in prompts]
        if self.scorer == "naive":
            return self.naive_terms(prompts, labels, range(n))
        cache = self.run.new_cache()
        size = Sizes(demo, query)

        def rec(lo: int, hi: int, pending: list[int]) -> None:
            # Score items lo..hi-1 on top of `cache` + `pending` (tokens not yet in the cache).
            if len(pending) + size(lo, hi) <= self.pack_tokens and hi - lo > 1:
                tree = Packed(pending)
                tree.loo(lo, hi, 0 if pending else -1, demo, query)
                for i, scores in self.run.packed(tree, cache).items():
                    out[i] = scores
                return
            if hi - lo == 1:
                ids = pending + query[lo]
                out[lo] = self.run.score(ids, cache)
                cache.crop(-len(ids))
                return
            mid = (lo + hi) // 2
            for (a, b), (c, d) in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
                ext = pending + [t for j in range(c, d) for t in demo[j]]
                if b - a == 1:  # a leaf: fold the extension into its query's forward pass
                    rec(a, b, ext)
                else:
                    self.run.last(ext, cache)
                    rec(a, b, [])
                    cache.crop(-len(ext))

        rec(0, n, list(self.prefix_ids))
        return out

    def naive_terms(
        self, prompts: Sequence[str], labels: Sequence[int], indices: Sequence[int]
    ) -> np.ndarray:
        """Leave-one-out terms `indices` of the set, each an independent prompt (the reference)."""
        demo = [self._piece(p, y) for p, y in zip(prompts, labels, strict=True)]
        orders = loo_orders(len(prompts))
        out = np.zeros((len(indices), 2))
        for k, i in enumerate(indices):
            ids = (
                self.prefix_ids
                + [t for j in orders[i] for t in demo[j]]
                + self._piece(prompts[i], -1)
            )
            out[k] = self.run.score(ids)
        return out

    def query_logprobs(
        self, demos: Sequence[str], labels: Sequence[int], queries: Sequence[str]
    ) -> np.ndarray:
        out = np.zeros((len(queries), 2))
        if not len(queries):
            return out
        self._check_length(demos, labels, max(len(self._piece(q, -1)) for q in queries))
        context = list(self.prefix_ids)
        for p, y in zip(demos, labels, strict=True):
            context += self._piece(p, y)
        if len(queries) == 1 or self.scorer == "naive":
            for k, q in enumerate(queries):
                out[k] = self.run.score(context + self._piece(q, -1))
            return out
        cache = self.run.new_cache()
        if context:
            self.run.last(context, cache)
        k = 0
        while k < len(queries):
            ids = self._piece(queries[k], -1)
            if len(ids) * 2 > self.pack_tokens:  # one query at a time
                out[k] = self.run.score(ids, cache)
                cache.crop(-len(ids))
                k += 1
                continue
            tree, used = Packed([]), 0  # as many queries as fit, side by side on the context
            while k < len(queries) and used + len(self._piece(queries[k], -1)) <= self.pack_tokens:
                used += len(tree.segments[tree.add(self._piece(queries[k], -1), -1, k)])
                k += 1
            for i, scores in self.run.packed(tree, cache).items():
                out[i] = scores
        return out


def from_options(name: str, opts: TransformersOptions, fmt: PromptFormat) -> TransformersModel:
    """The model `name` with a run's transformers options (the backend registry's builder)."""
    set_threads(opts.threads)
    return TransformersModel.load(
        name,
        fmt=fmt,
        scorer=opts.scorer,
        device=opts.device,
        dtype=opts.dtype,
        trust_remote_code=opts.trust_remote_code,
        device_map=opts.device_map,
        pack_tokens=opts.pack_tokens,
    )
