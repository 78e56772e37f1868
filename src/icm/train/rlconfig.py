"""Options of `icm rl` (a policy trained against a reward model) and `icm compare` (two policies
judged head to head), and the saved options a resumed `icm rl` checks; torch-free, so the
command line lists and checks them without loading torch.

The defaults, and why:
- grpo: TRL's main online trainer; rloo (REINFORCE leave-one-out) is the other TRL offers with
  the same inputs. Neither is named by the paper, which states no RL algorithm.
- group size 4: each completion's baseline is its group's mean, which needs at least 2; TRL's
  default of 8 doubles a CPU step for a smaller variance of the baseline.
- 64 completion tokens: TRL's 512 takes minutes a step on a CPU; Alpaca-style answers fit in a
  few sentences. Raise it on a GPU.
- KL weight 0.05: TRL's RLOO default. GRPO's TRL default is 0 (verifiable rewards cannot be
  gamed); a learned reward model can, so the policy is held near where it started. With LoRA the
  reference is the same weights with the adapter switched off: no second copy of the model.
- learning rate 1e-5, constant: TRL's 1e-6 is for full fine-tuning, and LoRA wants about ten
  times a full fine-tune's rate. Constant, so a resumed run with more --steps continues the
  same schedule.
- no length penalty: a reward model that prefers long answers shows as a mean completion length
  climbing to the cap in the progress lines; then set one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..backends.options import DTYPES, threads_option
from ..errors import ConfigError, RunError
from ..options import SEED_MAX, flag, from_json, option
from ..run.tracking import TRAINER_REPORT_TO
from ..tasks.readers import ReadOptions
from .config import META

ALGORITHMS = ("grpo", "rloo")
KIND = "rl"
"""The `kind` in the META file of a folder `icm rl` wrote."""
RESUMABLE = {"steps", "save_steps", "threads", "device", "trust_remote_code"}
"""Options a resumed `icm rl` may change: how long and where, not what is computed."""

PROMPTS_HELP = (
    "JSON or JSONL rows: a 'prompt' field is used as it is; otherwise the --template is filled "
    "from the row ('question'; an Alpaca row's 'instruction' and 'input' give it). A pairs file "
    "(icm export --format rm, or a comparison data set) gives each of its prompts once"
)
TEMPLATE_HELP = (
    "how a row without 'prompt' becomes one, e.g. 'Query: {question}\\nResponse 1:' (\\n: a "
    "newline); empty: the form the reward model saw in training when icm trained it, else "
    "'{question}'"
)


@dataclass
class Runtime:
    """Where a model runs; shared by both commands."""

    device: str | None = option(None, "torch device (default: cuda if any)")
    dtype: str = option(
        "auto", "weights dtype (auto: bfloat16 on a GPU that has it, else float32)", choices=DTYPES
    )
    threads: int | None = threads_option()
    trust_remote_code: bool = option(
        False, "run Python code shipped with a model (only for models you trust)"
    )


@dataclass
class _RLOptions:
    model: str = option(
        "default",
        "the policy to train: 'default' (embedded SmolLM2-135M), a Hugging Face id, a model "
        "or adapter folder, a .gguf",
    )
    reward: str = option(
        "",
        "the reward model: a folder `icm finetune --reward-model` wrote, or any one-output "
        "sequence classifier (folder or Hugging Face id)",
    )
    prompts: str = option("", PROMPTS_HELP)
    template: str = option("", TEMPLATE_HELP)
    limit: int | None = option(
        None, "use only the first this many distinct prompts (default: all)", min=1
    )
    max_prompt_tokens: int = option(
        512, "prompts longer than this many policy tokens are left out (and counted)", min=1
    )
    algorithm: str = option(
        "grpo", "grpo (TRL's GRPOTrainer) or rloo (TRL's RLOOTrainer)", choices=ALGORITHMS
    )
    steps: int = option(100, "optimiser steps; on --resume, the new total", min=1, max=10**7)
    group_size: int = option(
        4, "completions per prompt (TRL's num_generations); each one's baseline", min=2, max=1024
    )
    prompts_per_step: int = option(
        2, "prompts per optimiser step (each with --group-size completions)", min=1, max=10**5
    )
    max_completion_length: int = option(64, "tokens per completion, at most", min=1, max=10**5)
    temperature: float = option(1.0, "sampling temperature of the completions", above=0, max=100)
    kl_weight: float = option(
        0.05,
        "weight of the KL penalty toward the starting policy (TRL's beta; 0: none, and no "
        "reference pass)",
        min=0,
        max=1e4,
    )
    lr: float = option(1e-5, "AdamW learning rate of the LoRA weights (constant)", above=0, max=1)
    length_penalty: float = option(
        0.0, "subtracted from the reward per completion token (0: none)", min=0, max=1e4
    )
    lora_r: int = option(8, "LoRA rank", min=1, max=4096)
    lora_alpha: int = option(16, "LoRA scaling (alpha / r)", min=1, max=10**6)
    save_steps: int = option(10, "a checkpoint every this many steps, and at the end", min=1)
    seed: int = option(
        0, "seed of the LoRA init, the prompt order and sampling", min=0, max=SEED_MAX
    )
    adapter: bool = option(
        False,
        "save only the LoRA adapter (megabytes); it loads as --model on top of its base model",
    )
    report_to: str = option(
        "none",
        "where TRL's logs go, as transformers' report_to: tensorboard (to OUT/tensorboard), "
        "wandb, mlflow and the others it supports, when installed",
        choices=TRAINER_REPORT_TO,
    )


@dataclass
class RLConfig(Runtime, ReadOptions, _RLOptions):
    """Every option of `icm rl` (the runtime ones listed last)."""


@dataclass
class _CompareOptions:
    prompts: str = option("", PROMPTS_HELP)
    judge: str = option(
        "",
        "a reward-model folder (a one-output classifier scores each completion), or an ICM run "
        "folder of a comparison task: its model judges each pair in both orders after the run's "
        "ICM-labelled comparisons as demonstrations (no human label anywhere)",
    )
    template: str = option(
        "",
        "how a row without 'prompt' becomes one; empty: the template the policies were trained "
        "with when icm trained them, else '{question}'",
    )
    limit: int | None = option(
        None, "use only the first this many distinct prompts (default: all)", min=1
    )
    max_prompt_tokens: int = option(
        512, "prompts longer than this many tokens are left out (and counted)", min=1
    )
    max_new_tokens: int = option(64, "tokens per completion, at most", min=1, max=10**5)
    temperature: float = option(
        1.0, "sampling temperature of both policies (0: greedy)", min=0, max=100
    )
    batch_size: int = option(8, "prompts per generation and judging batch", min=1, max=10**5)
    max_demos: int | None = option(
        None, "pairwise judge: at most this many demonstrations (default: all that fit)", min=1
    )
    context_tokens: int | None = option(
        None, "pairwise judge: prompt-token budget (default: the model's context)", min=16
    )
    bootstrap: int = option(2000, "bootstrap resamples of the 95 percent interval", min=1)
    seed: int = option(
        0,
        "seed of the sampling (the same for both policies) and the bootstrap",
        min=0,
        max=SEED_MAX,
    )


@dataclass
class CompareConfig(Runtime, ReadOptions, _CompareOptions):
    """Every option of `icm compare` (the runtime ones listed last)."""


def read_meta(out: Path) -> dict:
    """The META of an `icm rl` folder, or one RunError line."""
    path = out / META
    if not path.is_file():
        raise RunError(f"{out}: not a folder `icm rl` wrote (no {META}): nothing to resume")
    meta = files.read_json(path, "training record")
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise RunError(f"{out}: {META} is not that of `icm rl`: nothing to resume")
    return meta


def resume_config(out: str | Path, given: dict) -> RLConfig:
    """The saved options of the run in `out` with the resumable ones of `given` applied; an
    option that would change what is computed is refused, by name."""
    meta = read_meta(Path(out))
    saved = from_json(RLConfig, meta.get("config"), f"{out}/{META}: config")
    fixed = sorted(k for k, v in given.items() if k not in RESUMABLE and getattr(saved, k) != v)
    if fixed:
        names = ", ".join(map(flag, fixed))
        raise ConfigError(f"{out}: --resume keeps the run's settings; not {names}")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE})
