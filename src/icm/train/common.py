"""What both trainers share: options, the run's base model, LoRA, the loop and the atomic save."""

from __future__ import annotations

import json
import math
import random
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import IcmError, RunError, pip_hint
from ..options import check
from ..run.folder import RunFolder, check_output, input_files
from .config import META, TrainConfig


def setup(cfg: TrainConfig) -> torch.device:
    """Check the options, set threads and the seed; the device to train on."""
    from ..backends.loading import pick_device, set_threads

    check(cfg)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return pick_device(cfg.device)


def base_model_path(run_folder: str | Path, model: str | None = None) -> str:
    """What transformers loads for the run's model ("default" and GGUF files: their conversion)."""
    from ..backends.loading import resolve

    return resolve(model or RunFolder(run_folder).read_config().model)


def check_out(out: str | Path, overwrite: bool, run: str | Path | None = None) -> Path:
    """A model folder to write: never the run folder or its inputs; an existing folder only with
    `overwrite`, and only when icm trained it (it holds META)."""
    protected = input_files(RunFolder(run).read_config()) if run is not None else []
    ours = Path(out, META).is_file()
    if Path(out).is_file():
        raise RunError(f"{out}: is a file; a model is written to a folder")
    return check_output(out, overwrite, ours, protected, run)


def add_lora(model, cfg: TrainConfig, task_type: str):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise IcmError(f"training needs peft: {pip_hint('peft')}") from e
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type=task_type,
    )
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora)


def train_loop(
    model,
    n: int,
    loss_fn: Callable[[list[int]], torch.Tensor],
    cfg: TrainConfig,
) -> list[float]:
    """AdamW over shuffled mini-batches of record indices; returns the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        order = list(range(n))
        rng.shuffle(order)
        for k in range(0, n, cfg.batch_size):
            if len(losses) >= steps:
                break
            loss = loss_fn(order[k : k + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def pad(seqs: Sequence[list[int]], value: int, device: torch.device) -> torch.Tensor:
    """Right-padded (batch, longest) tensor."""
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], device=device)


def save_model(
    model,
    tokenizer,
    out: str | Path,
    meta: dict,
    adapter: bool = False,
    curve: list[float] | None = None,
) -> None:
    """Write the LoRA weights folded into the model (or, with `adapter`, the LoRA adapter alone)
    + tokenizer + META to a temporary folder beside `out`, then move it into place: a
    half-written model folder is never seen. `curve`: the losses, as TensorBoard events in
    OUT/tensorboard (`--report-to tensorboard`)."""
    from ..export.write import replace_dir, temp_dir
    from ..run.tracking import LOGDIR, write_curve

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out)
    try:
        (model if adapter else model.merge_and_unload()).to("cpu").save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        if curve is not None:
            write_curve(tmp / LOGDIR, f"{meta['kind']}/loss", curve)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def meta(kind: str, source: str, base: str, cfg: TrainConfig, losses: list[float], **kw) -> dict:
    return {
        "kind": kind,
        "trained_on": source,
        "base_model": base,
        "config": asdict(cfg),
        "steps": len(losses),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        **kw,
    }
