"""What both trainers share: options, the run's base model, LoRA, TRL's trainer as both use it,
and the atomic save."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import TrainerCallback

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


def check_out(
    out: str | Path, overwrite: bool, run: str | Path | None = None, model: str | None = None
) -> Path:
    """A model folder to write: never the run folder, its inputs or the model trained from (nor
    a folder holding one); an existing folder only with `overwrite`, and only when icm trained
    it (it holds META)."""
    protected = input_files(RunFolder(run).read_config()) if run is not None else []
    protected += [model] if model else []
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


class LossCurve(TrainerCallback):
    """The loss of every optimiser step, as the trainer logs it (logging_steps=1)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **_):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def trl_trainer(reward: bool) -> tuple[type, type]:
    """TRL's config and trainer classes (the reward model's, or supervised fine-tuning's), or
    one line on how to install TRL."""
    try:
        from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer
    except ImportError as e:
        command = "icm finetune --reward-model" if reward else "icm finetune"
        raise IcmError(f"{command} trains with TRL: {pip_hint('trl')}") from e
    return (RewardConfig, RewardTrainer) if reward else (SFTConfig, SFTTrainer)


def tensorboard(report_to: str, folder: Path) -> list:
    """TensorBoard's callback writing to `folder` when `report_to` names it (transformers' own
    would write to ./runs, outside the output folder)."""
    if report_to != "tensorboard":
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(str(folder)))]


def fit(config_cls, trainer_cls, model, tok, rows: list[dict], cfg: TrainConfig, work: Path, **kw):
    """Train `model` with TRL's trainer on pre-tokenised `rows` (what the model will be asked,
    token for token); the loss of every step. Constant learning rate, no weight decay, gradients
    clipped at 1 (AdamW as TRL runs it); checkpoints off, logs to `work/tensorboard` or the
    integration `cfg.report_to` names."""
    from datasets import Dataset
    from transformers import PrinterCallback

    from ..run.tracking import LOGDIR

    curve = LossCurve()
    callbacks = [curve, *tensorboard(cfg.report_to, work / LOGDIR)]
    device = next(model.parameters()).device
    args = config_cls(
        output_dir=str(work / TRAINER_DIR),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to if cfg.report_to != "tensorboard" else "none",
        disable_tqdm=True,
        bf16=next(model.parameters()).dtype == torch.bfloat16,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        log_level="error",
        **no_checkpointing(),
        **kw,
    )
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # icm prints its own line
    trainer.train()
    model.eval()
    return curve.losses


def no_checkpointing() -> dict:
    """Activation checkpointing off (TRL turns it on by default: memory for time, which the
    small models and batches icm trains do not need), by the name this transformers reads."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    new = "activation_checkpointing"
    return {new if new in names else "gradient_checkpointing": False}


TRAINER_DIR = ".trainer"
"""The trainer's own folder inside the staging folder; removed before the model is moved in."""


def pad(seqs: Sequence[list[int]], value: int, device: torch.device) -> torch.Tensor:
    """Right-padded (batch, longest) tensor."""
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], device=device)


@contextmanager
def staging(out: str | Path) -> Iterator[Path]:
    """A folder beside `out` to train and save into, moved into place when the block ends
    without an error: a half-written model folder is never seen, and none is left behind."""
    from ..export.write import replace_dir, temp_dir

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out)
    try:
        yield tmp
        shutil.rmtree(tmp / TRAINER_DIR, ignore_errors=True)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(model, tokenizer, folder: Path, meta: dict, adapter: bool = False) -> None:
    """Write the LoRA weights folded into the model (or, with `adapter`, the LoRA adapter alone),
    the tokenizer and META into `folder`."""
    (model if adapter else model.merge_and_unload()).to("cpu").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")


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
