"""Training options; torch-free so that the command line can list them without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.options import DTYPES, threads_option, trust_option
from ..files import TRAINED_META
from ..options import SEED_MAX, option
from ..run.tracking import TRAINER_REPORT_TO

META = TRAINED_META
"""Written into every trained folder: what it was trained from and how."""


@dataclass
class TrainConfig:
    epochs: int = option(3, "passes over the training records", min=1, max=10**6)
    max_steps: int | None = option(None, "stop after this many optimiser steps", min=1)
    lr: float = option(2e-4, "AdamW learning rate of the LoRA weights", above=0, max=10)
    batch_size: int = option(8, "records per optimiser step", min=1, max=10**6)
    lora_r: int = option(8, "LoRA rank", min=1, max=4096)
    lora_alpha: int = option(16, "LoRA scaling (alpha / r)", min=1, max=10**6)
    max_length: int = option(
        1024, "reward model: longest text in tokens (cut at the end)", min=8, max=10**7
    )
    margin: float = option(
        0.0,
        "reward model: ICM's confidence c in a pair as its margin m = this x (2c - 1), at least "
        "0, in the loss -log sigmoid(r_chosen - r_rejected - m) (TRL's margin column); 0: none",
        min=0,
        max=100,
    )
    seed: int = option(0, "seed of the LoRA init and the record order", min=0, max=SEED_MAX)
    adapter: bool = option(
        False,
        "save only the LoRA adapter (megabytes, not a copy of the model); it loads "
        "as --model like a full model folder, on top of the base model it names",
    )
    device: str | None = option(None, "torch device (default: cuda if any)")
    dtype: str = option(
        "auto",
        "weights dtype while training (auto: bfloat16 on a GPU that has it, else float32)",
        choices=DTYPES,
    )
    report_to: str = option(
        "none",
        "where the trainer's logs go, as transformers' report_to: tensorboard (to "
        "OUT/tensorboard), wandb, mlflow and the others it supports, when installed",
        choices=TRAINER_REPORT_TO,
    )
    trust_remote_code: bool = trust_option()
    threads: int | None = threads_option()
