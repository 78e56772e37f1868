"""Iterative ICM: batch j+1 is labelled by the model fine-tuned on the ICM labels of batches 1..j.

This is how the paper takes ICM past what one context holds. Every fine-tune starts from the run's
base model and trains on all labels so far (not on top of the previous fine-tune), so the model
that labels batch j+1 is what `icm finetune --adapter` would make from batches 1..j: a LoRA adapter
(megabytes, not a copy of the model), loaded on top of the base model. The run folder:

    batches/000/            batch 1, labelled by the base model; finetuned/: trained on batch 1
    batches/001/            batch 2, labelled by batches/000/finetuned; finetuned/: on batches 1-2
    ...                     the last batch gets no model: `icm finetune RUN` trains on all labels
    labels.jsonl, summary.json   merged; summary.json lists which model labelled each batch

Each step is a checkpoint: a batch's search resumes from its state.json, and a model folder only
appears once complete, so `icm run --resume` goes on from where a run stopped.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from . import atomic
from .config import RunConfig
from .core.model import LabelModel
from .core.search import State, Step
from .errors import IcmError
from .export import read_labelled
from .run import LABELS, SUMMARY, Run, make_model
from .tasks import Dataset, Task
from .train import META, TrainConfig

MODEL_DIR = "finetuned"


def train_config(run: Run, adapter: bool) -> TrainConfig:
    cfg = run.cfg
    return TrainConfig(
        epochs=cfg.finetune_epochs,
        lr=cfg.finetune_lr,
        max_steps=cfg.finetune_max_steps,
        seed=cfg.seed,
        device=cfg.device,
        dtype=cfg.dtype,
        threads=cfg.threads,
        trust_remote_code=cfg.trust_remote_code,
        adapter=adapter,
    )


def check(cfg: RunConfig, data: Dataset, parts: list[list[int]]) -> None:
    """Iterative fine-tuning trains the model, and needs something to train on before a batch."""
    if cfg.backend != "transformers":
        raise IcmError("--iterative-finetune trains the model: it needs --backend transformers")
    if len(parts) < 2:
        raise IcmError(
            f"--iterative-finetune needs at least two batches, and the {len(data)} rows fit one: "
            "set --batch-size"
        )


def execute_iterative(
    run: Run,
    task: Task,
    data: Dataset,
    parts: list[list[int]],
    model: LabelModel,
    on_step: Callable[[Step, State, dict], None] | None = None,
) -> dict:
    """Label the batches in order, fine-tuning between them; merge; return the summary.

    `model` is the run's base model, already loaded; it labels the first batch.
    """
    from .backends.transformers import adapter_base, resolve
    from .train.finetune import finetune_labels

    cfg = run.cfg
    check(cfg, data, parts)
    base = resolve(cfg.model)
    # Megabytes per batch instead of a copy of the model (a base that is itself an adapter gets
    # merged models: an adapter on an adapter would not load on its own).
    tcfg = train_config(run, adapter=adapter_base(base) is None)
    folders = [run.batch_folder(b) for b in range(len(parts))]
    names = [cfg.model] + [str(Path("batches", f.name, MODEL_DIR)) for f in folders[:-1]]
    current = {"name": names[0], "model": model}

    def model_for(b: int) -> LabelModel:
        if current["name"] != names[b]:
            current["model"] = None  # drop this reference to the last model before loading the next
            gc.collect()
            path = str(run.folder / names[b])
            current["model"] = make_model(dataclasses.replace(cfg, model=path), task)
            current["name"] = names[b]
        return current["model"]

    def finetune_after(b: int) -> None:
        out = folders[b] / MODEL_DIR
        if b + 1 == len(parts) or (out / META).exists():
            return
        for stale in folders[b].glob(f".{MODEL_DIR}.*"):  # left by a fine-tune that was killed
            shutil.rmtree(stale, ignore_errors=True)
        sets = [read_labelled(f / LABELS, task) for f in folders[: b + 1]]
        print(
            f"icm: fine-tuning on batches 1-{b + 1} ({sum(len(s.rows) for s in sets)} labels)"
            f" -> {out}",
            file=sys.stderr,
        )
        source = f"{run.folder} batches 1-{b + 1}"
        finetune_labels(sets, base, out, tcfg, overwrite=True, source=source)

    summaries = run.search_batches(task, data, parts, model_for, finetune_after, on_step)
    summary = run.merge(data, parts, summaries)
    summary["labelled_by"] = names
    atomic.write_json(run.folder / SUMMARY, summary)
    return summary
