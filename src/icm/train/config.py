"""Training options; torch-free so that the command line can list them without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field

META = "icm_train.json"
"""Written into every trained folder: what it was trained from and how."""


@dataclass
class TrainConfig:
    epochs: int = field(default=3, metadata={"help": "passes over the training records"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimiser steps"}
    )
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate of the LoRA weights"})
    batch_size: int = field(default=8, metadata={"help": "records per optimiser step"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling (alpha / r)"})
    max_length: int = field(
        default=1024, metadata={"help": "reward model: longest text in tokens (cut at the end)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the LoRA init and the record order"})
    adapter: bool = field(
        default=False,
        metadata={
            "help": "save only the LoRA adapter (megabytes, not a copy of the model); it loads "
            "as --model like a full model folder, on top of the base model it names"
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "torch device (default: cuda if any)"}
    )
    dtype: str = field(default="float32", metadata={"help": "weights dtype while training"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run Python code shipped with the model (only for models you trust)"},
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"}
    )
