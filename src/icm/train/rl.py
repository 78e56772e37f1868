"""`icm rl`: a policy trained against a reward model by TRL (GRPO or RLOO), LoRA on the policy.

TRL samples `group_size` completions per prompt, scores each with the reward model, and moves
the policy toward the completions that beat their group, held near the starting policy by a KL
penalty. The reward model reads prompt + completion as text, tokenised by its own tokenizer, so
a policy with another tokenizer needs nothing more.

The output folder:
  icm_train.json   what was trained from and how (options, fingerprints), status, last metrics
  progress.jsonl   one line per step: mean reward and its spread, KL, completion length, seconds
  checkpoints/     TRL checkpoints (adapter, optimiser, RNG state); `icm rl --resume OUT` goes on
                   from the newest complete one
  the policy       at the end: merged weights (or, with --adapter, the LoRA adapter) and the
                   tokenizer, so OUT loads as --model everywhere in icm
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from .. import files
from ..backends.loading import (
    adapter_base,
    load_pretrained,
    pick_device,
    pick_dtype,
    resolve,
    set_threads,
    weights_signature,
)
from ..errors import ConfigError, DataError, IcmError, LinkError, RunError, pip_hint
from ..export.write import temp_dir
from ..options import check, options_of
from ..run.folder import RunFolder, check_output
from ..run.tracking import LOGDIR, check_report_to
from ..tasks.readers import ReadOptions
from .common import no_checkpointing, tensorboard
from .config import META
from .prompts import Prompt, load_prompts, pick_template
from .reward import check_classifier, load_reward, rewards
from .rlconfig import KIND, RLConfig, read_meta

CHECKPOINTS, PROGRESS = "checkpoints", "progress.jsonl"


def say_line(text: str) -> None:
    print(f"icm: {text}", file=sys.stderr, flush=True)


@dataclass
class Job:
    """Everything one training needs, checked and loaded before anything is written."""

    cfg: RLConfig
    out: Path
    template: str
    prompts: list[Prompt]
    left_out: int
    tok: object
    policy: object
    reward_tok: object
    reward_model: object
    device: torch.device
    dtype: str
    fingerprints: dict


# -- rewards -------------------------------------------------------------------------------------
class RewardModel:
    """The reward model as a TRL reward function: prompt + completion as text, tokenised by the
    reward model's own tokenizer."""

    __name__ = "reward_model"

    def __init__(self, model, tok) -> None:
        self.model, self.tok = model, tok

    def __call__(self, prompts: list[str], completions: list[str], **_) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        with torch.inference_mode():
            return rewards(self.model, self.tok, texts, max_length=10**7).tolist()


class LengthPenalty:
    """-weight per completion token, as a second TRL reward function (logged on its own)."""

    __name__ = "length_penalty"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, prompts: list[str], completions: list[str], completion_ids, **_):
        return [-self.weight * len(ids) for ids in completion_ids]


# -- progress ------------------------------------------------------------------------------------
class Progress(TrainerCallback):
    """One line per step in progress.jsonl (and on stderr): the mean reward, KL and length;
    a checkpoint at the last step too, so a finished run can be extended."""

    def __init__(self, path: Path, show: bool) -> None:
        self.path, self.show, self.t = path, show, time.monotonic()

    def on_step_end(self, args, state, control, **_):
        if state.global_step >= state.max_steps:
            control.should_save = True

    def on_log(self, args, state, control, logs=None, **_):
        if not logs or "reward" not in logs:
            return
        now = time.monotonic()
        row = {
            "step": state.global_step,
            "reward": logs["reward"],
            "reward_std": logs.get("reward_std"),
            "kl": logs.get("kl"),
            "completion_length": logs.get("completions/mean_length"),
            "clipped_ratio": logs.get("completions/clipped_ratio"),
            "seconds": round(now - self.t, 2),
            **{k: v for k, v in logs.items() if k.startswith("rewards/")},
        }
        self.t = now
        files.append_jsonl(self.path, row)
        if self.show:
            kl = "-" if row["kl"] is None else f"{row['kl']:.3g}"
            say_line(
                f"rl step {state.global_step}/{state.max_steps}  reward {row['reward']:+.3f} "
                f"(sd {row['reward_std'] or 0:.3f})  kl {kl}  length "
                f"{row['completion_length'] or 0:.1f}  {row['seconds']:.1f} s"
            )


# -- the output folder ---------------------------------------------------------------------------
def check_new_out(out: Path, overwrite: bool, cfg: RLConfig) -> None:
    """A new run's folder: never an input or a folder holding one; an existing folder only
    with --overwrite, and only one icm trained."""
    inputs = [p for p in (cfg.prompts, cfg.reward, cfg.model) if p and Path(p).exists()]
    if out.is_file():
        raise RunError(f"{out}: is a file; --out names a folder")
    check_output(out, overwrite, (out / META).is_file(), inputs)
    if (out / META).is_file() and not overwrite:
        raise RunError(f"{out}: holds an icm training: --resume it, or pass --overwrite")


def start(job: Job, resume: bool) -> RunFolder:
    """Take the folder's lock (a second process is refused), clear it for a new run (only an
    icm training gets here with --overwrite), write META."""
    folder = RunFolder(job.out)
    job.out.mkdir(parents=True, exist_ok=True)
    folder.lock()
    if not resume:  # only what an earlier icm training wrote: a file of the user's stays
        for p in ours(job.out):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    files.write_json(job.out / META, record(job, "training"))
    return folder


def ours(out: Path) -> list[Path]:
    """The paths an `icm rl` run wrote in `out`: its records, checkpoints and logs, and the
    model files its META lists."""
    meta = files.read_json(out / META, "training record") if (out / META).is_file() else {}
    written = meta.get("files") if isinstance(meta, dict) else None
    names = [n for n in written or [] if files.plain_name(n)]
    return [out / n for n in (CHECKPOINTS, LOGDIR, PROGRESS, *names, META)]


def refuse_links(out: Path) -> None:
    """A link where the run writes, checkpoints or logs: a resume would prune or write through
    it, --overwrite would remove it. Refused before anything changes."""
    for p in (out / n for n in (CHECKPOINTS, LOGDIR, PROGRESS, META)):
        if p.is_symlink():
            raise LinkError(f"{p}: is a link where icm rl writes; nothing was changed")


def record(job: Job, status: str, **extra) -> dict:
    """META: read by resumes (config, fingerprints), by `icm compare` (the prompt template),
    and by people."""
    return {
        "kind": KIND,
        "status": status,
        "trained_on": job.cfg.reward,
        "base_model": resolve(job.cfg.model),
        "config": dataclasses.asdict(job.cfg),
        "prompt_template": job.template,
        "prompts": {"file": job.cfg.prompts, "used": len(job.prompts), "too_long": job.left_out},
        "fingerprints": job.fingerprints,
        **extra,
    }


def checkpoints(folder: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) of every checkpoint, newest first; a kill while saving leaves
    one without its trainer state."""
    found = []
    for p in folder.glob("checkpoint-*"):
        step = p.name.removeprefix("checkpoint-")
        if p.is_dir() and step.isdigit():
            found.append((int(step), p, (p / "trainer_state.json").is_file()))
    return sorted(found, reverse=True)


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; newer ones a kill cut short are removed."""
    for _, p, complete in checkpoints(folder):
        if complete:
            return p
        shutil.rmtree(p, ignore_errors=True)
    return None


def read_progress(path: Path) -> list[dict]:
    """progress.jsonl's rows (a line a kill cut short left out), each with its step number."""
    if not path.exists():
        return []
    rows = files.read_jsonl(path, torn_tail=True)
    for r, row in enumerate(rows, start=1):
        n = row.get("step")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise RunError(f"{path}: row {r}: field 'step' must be a step number, got {n!r:.40}")
    return rows


def trim_progress(path: Path, step: int) -> None:
    """Drop the progress lines after `step` (logged after the checkpoint a resume goes on from)."""
    if path.exists():
        files.write_jsonl(path, [r for r in read_progress(path) if r["step"] <= step])


# -- preparing -----------------------------------------------------------------------------------
def need_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError as e:
        raise IcmError(f"icm rl needs TRL (the rl extra): {pip_hint('trl>=1.16,<2')}") from e


def check_options(cfg: RLConfig, device: torch.device) -> None:
    check(cfg)
    check_report_to(cfg.report_to)
    if not cfg.reward:
        raise ConfigError("--reward: the reward model to train against (a folder)")
    if not cfg.prompts:
        raise ConfigError("--prompts: the file of prompts to train on")
    if cfg.dtype == "float16":
        raise ConfigError("--dtype float16: training in float16 overflows; use bfloat16 or float32")
    if device.type == "cuda" and device.index not in (None, 0):
        raise ConfigError(
            f"--device {device}: icm rl trains on the first GPU it sees; choose it with "
            "CUDA_VISIBLE_DEVICES"
        )


def fit_prompts(prompts: list[Prompt], tok, cfg: RLConfig) -> tuple[list[Prompt], int]:
    """The prompts of at most --max-prompt-tokens policy tokens, and how many were longer."""
    limit = cfg.max_prompt_tokens
    lengths = [len(ids) for ids in tok([p.text for p in prompts]).input_ids]
    kept = [p for p, n in zip(prompts, lengths, strict=True) if n <= limit]
    if not kept:
        raise DataError(
            f"{cfg.prompts}: every prompt is longer than --max-prompt-tokens {limit} "
            f"(shortest: {min(lengths)} tokens)"
        )
    if len(kept) < cfg.prompts_per_step:
        raise DataError(
            f"{cfg.prompts}: {len(kept)} prompt(s) to train on, fewer than --prompts-per-step "
            f"{cfg.prompts_per_step}"
        )
    return kept, len(prompts) - len(kept)


def fingerprint(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def prepare(cfg: RLConfig, out: Path, overwrite: bool, resume: bool, say: Callable) -> Job:
    """Check the options, the folder, the reward model and the prompts, then load the models:
    every refusal comes before the first write."""
    device = pick_device(cfg.device)
    check_options(cfg, device)
    refuse_links(out)
    saved = read_meta(out) if resume else None
    if saved is not None:
        read_progress(out / PROGRESS)  # checked before anything of the run is rewritten
        done = max((n for n, _, ok in checkpoints(out / CHECKPOINTS) if ok), default=0)
        if cfg.steps < done:
            raise ConfigError(f"--steps {cfg.steps} is below the {done} steps already done")
    else:
        check_new_out(out, overwrite, cfg)
    template = pick_template(cfg.template, cfg.reward)
    prompts = load_prompts(cfg.prompts, template, cfg.limit, options_of(ReadOptions, cfg))
    check_classifier(cfg.reward, trust_remote_code=cfg.trust_remote_code)
    need_trl()
    if cfg.adapter and adapter_base(resolve(cfg.model)):
        raise IcmError(
            f"{cfg.model} is itself a LoRA adapter: an adapter on top of it would not load on "
            "its own; train without --adapter"
        )
    set_threads(cfg.threads)
    dtype = pick_dtype(cfg.dtype, device)
    tok, policy = load_pretrained(cfg.model, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    kept, left_out = fit_prompts(prompts, tok, cfg)
    reward_tok, rm = load_reward(cfg.reward, dtype, cfg.trust_remote_code)
    rm = rm.to(device).eval()
    prints = {
        "prompts": fingerprint([p.text for p in kept]),
        "policy": weights_signature(policy),
        "reward": weights_signature(rm),
    }
    if saved is not None:
        before = saved.get("fingerprints")
        before = before if isinstance(before, dict) else {}
        changed = [k for k, v in prints.items() if before.get(k) != v]
        if changed:
            what = " and the ".join(changed)
            raise RunError(f"{out}: --resume: the {what} changed since the training began")
    if reward_tok.get_vocab() != tok.get_vocab():
        say(
            "the reward model's tokenizer differs from the policy's: completions are scored "
            "as text, re-tokenised by the reward model's"
        )
    return Job(
        cfg, out, template, kept, left_out, tok, policy, reward_tok, rm, device, dtype, prints
    )


# -- training ------------------------------------------------------------------------------------
def trl_args(job: Job) -> dict:
    cfg = job.cfg
    return dict(
        output_dir=str(job.out / CHECKPOINTS),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.group_size,
        gradient_accumulation_steps=1,
        num_generations=cfg.group_size,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.kl_weight,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to if cfg.report_to != "tensorboard" else "none",
        disable_tqdm=True,
        bf16=job.dtype == "bfloat16",
        use_cpu=job.device.type == "cpu",
        dataloader_num_workers=0,
        log_level="error",
        **no_checkpointing(),
    )


def build_trainer(job: Job, show: bool):
    """TRL's trainer with LoRA on the policy and the reward model (plus a length penalty)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    cfg = job.cfg
    config_cls, trainer_cls = {
        "grpo": (GRPOConfig, GRPOTrainer),
        "rloo": (RLOOConfig, RLOOTrainer),
    }[cfg.algorithm]
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    funcs: list = [RewardModel(job.reward_model, job.reward_tok)]
    if cfg.length_penalty:
        funcs.append(LengthPenalty(cfg.length_penalty))
    trainer = trainer_cls(
        model=job.policy,
        reward_funcs=funcs,
        args=config_cls(**trl_args(job)),
        train_dataset=Dataset.from_list([{"prompt": p.text} for p in job.prompts]),
        processing_class=job.tok,
        peft_config=lora,
        callbacks=[
            Progress(job.out / PROGRESS, show),
            *tensorboard(job.cfg.report_to, job.out / LOGDIR),
        ],
    )
    trainer.remove_callback(PrinterCallback)  # the Progress lines say it in fewer words
    return trainer


def publish(model, tok, out: Path, adapter: bool) -> list[str]:
    """Write the policy (merged, or the adapter alone) and tokenizer into `out`, each file
    complete before it is moved in; the checkpoints and records stay beside them. Returns the
    names written (META lists them, so --overwrite removes those and no others)."""
    tmp = temp_dir(out)
    try:
        (model if adapter else model.merge_and_unload()).to("cpu").save_pretrained(tmp)
        tok.save_pretrained(tmp)
        mode = 0o666 & ~files.umask()
        names = sorted(f.name for f in tmp.iterdir())
        for name in names:
            (tmp / name).chmod(mode)
            files.refuse_replacing(out / name)
            os.replace(tmp / name, out / name)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_policy(
    cfg: RLConfig,
    out: str | Path,
    overwrite: bool = False,
    resume: bool = False,
    show: bool = True,
    say: Callable[[str], None] = say_line,
) -> dict:
    """Train the policy `cfg.model` against `cfg.reward` on `cfg.prompts`; write it to `out`.
    With `resume`, go on from the newest checkpoint in `out` (its options checked by the
    caller with `resume_config`). Returns the final META."""
    job = prepare(cfg, Path(out), overwrite, resume, say)
    if job.left_out:
        say(f"{job.left_out} prompts over --max-prompt-tokens left out; {len(job.prompts)} used")
    folder = start(job, resume)
    try:
        ckpt = last_checkpoint(job.out / CHECKPOINTS) if resume else None
        trim_progress(job.out / PROGRESS, int(ckpt.name.split("-")[1]) if ckpt else 0)
        if ckpt is not None:
            say(f"resuming from {ckpt.name}")
        t0 = time.monotonic()
        with warnings.catch_warnings():  # TRL and peft warn about settings chosen on purpose
            warnings.simplefilter("ignore")
            trainer = build_trainer(job, show)
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        written = publish(trainer.model, job.tok, job.out, cfg.adapter)
        rows = read_progress(job.out / PROGRESS)
        meta = record(
            job,
            "done",
            steps=trainer.state.global_step,
            first=rows[0] if rows else None,
            last=rows[-1] if rows else None,
            seconds=round(time.monotonic() - t0, 1),
            files=written,
        )
        files.write_json(job.out / META, meta)
        return meta
    finally:
        folder.unlock()
