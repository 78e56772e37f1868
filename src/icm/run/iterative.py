"""Iterative ICM: batch j+1 is labelled by the model fine-tuned on the ICM labels of batches 1..j.

This is how the paper takes ICM past what one context holds. Every fine-tune starts from the run's
base model and trains on all labels so far (not on top of the previous fine-tune), so the model
that labels batch j+1 is what `icm finetune --adapter` would make from batches 1..j: a LoRA adapter
(megabytes, not a copy of the model), loaded on top of the base model. The run folder:

    batches/000/            batch 1, labelled by the base model; finetuned/: trained on batch 1
    batches/001/            batch 2, labelled by batches/000/finetuned; finetuned/: on batches 1-2
    ...                     the last batch gets no model: `icm finetune RUN` trains on all labels
    labels.jsonl, summary.json   merged; summary.json lists which model labelled each batch

`IterativeModels` is the driver's model provider (`icm.run.models.Models`). A model folder
only appears once complete, so `icm run --resume` goes on from where a run stopped.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
from pathlib import Path

from ..backends import make_model
from ..core.model import LabelModel
from ..tasks import Task
from ..train import META, TrainConfig
from .config import RunConfig
from .folder import MODEL_DIR, RunFolder
from .labels import labelled_rows


class IterativeModels:
    """Batch 0: the base model; batch b: the base model with the adapter trained on 0..b-1."""

    sequential = True

    def __init__(self, folder: RunFolder, cfg: RunConfig, task: Task, base: LabelModel) -> None:
        from ..backends.loading import adapter_base, resolve

        self.folder, self.cfg, self.task = folder, cfg, task
        self.base = resolve(cfg.model)
        # Megabytes per batch instead of a copy of the model (a base that is itself an adapter gets
        # merged models: an adapter on an adapter would not load on its own).
        self.adapter = adapter_base(self.base) is None
        self.current: tuple[str, LabelModel | None] = (cfg.model, base)
        self.labelled: list[list[dict]] = []

    def name(self, b: int) -> str:
        return self.cfg.model if b == 0 else str(Path("batches", f"{b - 1:03d}", MODEL_DIR))

    def names(self, batches: int) -> list[str]:
        return [self.name(b) for b in range(batches)]

    def model_for(self, b: int) -> LabelModel:
        name, model = self.current
        if name != self.name(b):
            self.current = (name, None)  # drop the last model before loading the next
            del model
            gc.collect()
            path = str(self.folder.path / self.name(b))
            model = make_model(dataclasses.replace(self.cfg, model=path), self.task.fmt)
            self.current = (self.name(b), model)
        assert self.current[1] is not None
        return self.current[1]

    def after(self, b: int, rows: list[dict]) -> None:
        """Batch b is labelled: fine-tune on batches 0..b for batch b + 1 (unless done)."""
        from ..train.finetune import finetune_labels

        self.labelled.append(rows)
        out = self.folder.batch(b) / MODEL_DIR
        if (out / META).exists():
            return
        for stale in out.parent.glob(f".{MODEL_DIR}.*"):  # left by a fine-tune that was killed
            shutil.rmtree(stale, ignore_errors=True)
        sets = [labelled_rows(r, self.task, f"batch {k + 1}") for k, r in enumerate(self.labelled)]
        source = f"{self.folder.path} batches 1-{b + 1}"
        finetune_labels(sets, self.base, out, self.train_config(), source=source)

    def train_config(self) -> TrainConfig:
        cfg = self.cfg
        return TrainConfig(
            epochs=cfg.finetune_epochs,
            lr=cfg.finetune_lr,
            max_steps=cfg.finetune_max_steps,
            seed=cfg.seed,
            device=cfg.device,
            dtype=cfg.dtype,
            threads=cfg.threads,
            trust_remote_code=cfg.trust_remote_code,
            adapter=self.adapter,
        )
