"""Training on ICM labels: `finetune.finetune` (LoRA SFT) and `reward.train_reward` (a reward
model). Both need the `train` extra (peft) and write a merged model folder atomically.

This module stays light (no torch) so that the command line can list the options.
"""

from .config import META, TrainConfig

__all__ = ["META", "TrainConfig"]
