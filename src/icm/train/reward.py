"""A reward model from ICM labels: a scalar head on the run's model, trained on preference pairs.

The pairs are those of `icm export --format rm` (comparisons directly; claims ICM labelled True
against claims of the same question it labelled False). The loss is the Bradley-Terry one,
-log sigmoid(r(prompt + chosen) - r(prompt + rejected) - m), with the margin m = 0 unless
`margin` turns ICM's confidence in the pair into one (as TRL's RewardTrainer reads a `margin`
column). TRL's RewardTrainer trains it, on the texts tokenised as `rewards` reads them. LoRA on
every linear layer plus a fully trained head; merged before saving, so the
folder loads with `AutoModelForSequenceClassification.from_pretrained(DIR)`. Its META file
records the form of the prompts it saw, so `icm rl` formats its prompts the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..backends.loading import pick_dtype
from ..errors import IcmError, ModelError
from ..export import Labelled, load_labelled, records
from ..export.records import pair_confidence
from .common import (
    TrainConfig,
    add_lora,
    base_model_path,
    check_out,
    fit,
    meta,
    pad,
    save_model,
    setup,
    staging,
    trl_trainer,
)
from .prompts import task_prompt_template


def load_reward(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Tokenizer and a one-output sequence classifier (a fresh head on a causal LM's body)."""
    from ..backends.loading import load_pretrained

    auto = "AutoModelForSequenceClassification"
    tok, model = load_pretrained(path, auto, dtype, trust_remote_code, num_labels=1)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # The head reads the last token that is not padding: it must know the padding id.
    model.config.pad_token_id = tok.pad_token_id
    return tok, model


def check_classifier(path: str, what: str = "reward model", trust_remote_code: bool = False):
    """The config of a trained one-output sequence classifier at `path`, or one ModelError line.

    Loading a causal LM as a classifier would give it a fresh, random head: a reward of noise."""
    import transformers

    from ..backends.loading import quiet, refuse_missing

    quiet()
    refuse_missing(path)
    if Path(path, "adapter_config.json").is_file():
        raise ModelError(f"{path}: a LoRA adapter; a {what} must be a full (merged) model folder")
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear line
        raise ModelError(f"{path}: cannot load the {what}: {str(e).splitlines()[0]}") from e
    kinds = config.architectures or []
    if not any(k.endswith("ForSequenceClassification") for k in kinds) or config.num_labels != 1:
        shown = ", ".join(kinds) or config.model_type
        raise ModelError(
            f"{path}: not a one-output sequence classifier ({shown} with {config.num_labels} "
            f"outputs): pass a folder `icm finetune --reward-model` wrote"
        )
    return config


def rewards(model, tok, texts: list[str], max_length: int = 1024) -> torch.Tensor:
    """One scalar per text (right padding; the head reads each text's last real token)."""
    device = next(model.parameters()).device
    ids = [tok(t, truncation=True, max_length=max_length).input_ids for t in texts]
    batch = pad(ids, tok.pad_token_id, device)
    mask = pad([[1] * len(s) for s in ids], 0, device)
    return model(input_ids=batch, attention_mask=mask).logits[:, 0].float()


def score_pairs(
    model, tok, pairs: Sequence[dict], batch_size: int = 8, max_length: int = 1024
) -> list[float]:
    """r(prompt + chosen) - r(prompt + rejected) of every pair: positive where the reward model
    agrees with the pair."""
    out: list[float] = []
    with torch.inference_mode():
        for k in range(0, len(pairs), batch_size):
            part = pairs[k : k + batch_size]
            texts = [p["prompt"] + p["chosen"] for p in part]
            texts += [p["prompt"] + p["rejected"] for p in part]
            r = rewards(model, tok, texts, max_length)
            out += (r[: len(part)] - r[len(part) :]).tolist()
    return out


def margins(data: Labelled, pairs: Sequence[dict], scale: float) -> list[float]:
    """Each pair's margin from ICM's confidence c in it: scale x (2c - 1), at least 0."""
    if not scale:
        return [0.0] * len(pairs)
    conf = pair_confidence(data)
    keys = [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    return [max(0.0, scale * (2 * conf[k] - 1)) if k in conf else 0.0 for k in keys]


def train_reward_pairs(
    pairs: Sequence[dict],
    base: str,
    out: str | Path,
    cfg: TrainConfig,
    pair_margins: Sequence[float] | None = None,
    source: str = "",
    **info,
) -> dict:
    """Train a reward model from `base` on prompt/chosen/rejected pairs; write it to `out`
    (which the caller has checked). `info` goes into the META file."""
    if cfg.adapter:
        raise IcmError("--adapter is for the language model; a reward model is saved merged")
    m = list(pair_margins) if pair_margins is not None else [0.0] * len(pairs)
    device = setup(cfg)
    tok, rm = load_reward(base, pick_dtype(cfg.dtype, device), cfg.trust_remote_code)
    rm = add_lora(rm.to(device), cfg, "SEQ_CLS")

    def ids(text: str) -> list[int]:  # as `rewards` reads a text when it scores one
        return tok(text, truncation=True, max_length=cfg.max_length).input_ids

    rows = [
        {
            "chosen_ids": ids(p["prompt"] + p["chosen"]),
            "rejected_ids": ids(p["prompt"] + p["rejected"]),
            "margin": margin,
        }
        for p, margin in zip(pairs, m, strict=True)
    ]
    classes = trl_trainer(reward=True)
    with staging(out) as folder:
        losses = fit(*classes, rm, tok, rows, cfg, folder, max_length=None)
        used = [x for x in m if x]
        extra = {"pairs": len(pairs), "margin_mean": sum(used) / len(used) if used else 0.0}
        result = meta("reward", source, base, cfg, losses, **extra, **info)
        save_model(rm, tok, folder, result)
    return result


def train_reward(
    run: str | Path,
    out: str | Path,
    cfg: TrainConfig | None = None,
    searched_only: bool = False,
    model: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a reward model on the run's ICM preference pairs; write it to `out`."""
    cfg = cfg or TrainConfig()
    if cfg.adapter:
        raise IcmError("--adapter is for the language model; a reward model is saved merged")
    out = check_out(out, overwrite, run, model)
    data = load_labelled(run, searched_only)
    pairs = records(data, "rm")
    base = base_model_path(run, model)
    template = task_prompt_template(data.task)
    m = margins(data, pairs, cfg.margin)
    return train_reward_pairs(pairs, base, out, cfg, m, str(run), prompt_template=template)
