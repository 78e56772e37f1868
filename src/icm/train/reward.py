"""A reward model from ICM labels: a scalar head on the run's model, trained on preference pairs.

The pairs are those of `icm export --format rm` (comparisons directly; claims ICM labelled True
against claims of the same question it labelled False). The loss is the Bradley-Terry one,
-log sigmoid(r(prompt + chosen) - r(prompt + rejected)). LoRA on every linear layer plus a fully
trained head; merged before saving, so the folder loads with
`AutoModelForSequenceClassification.from_pretrained(DIR)`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..backends.transformers import pick_dtype
from ..errors import IcmError
from ..export import load_labelled, records
from .common import (
    TrainConfig,
    add_lora,
    base_model_path,
    check_out,
    meta,
    pad,
    save_model,
    setup,
    train_loop,
)


def load_reward(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Tokenizer and a one-output sequence classifier (a fresh head on a causal LM's body)."""
    from ..backends.transformers import load_pretrained

    auto = "AutoModelForSequenceClassification"
    tok, model = load_pretrained(path, auto, dtype, trust_remote_code, num_labels=1)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # The head reads the last token that is not padding: it must know the padding id.
    model.config.pad_token_id = tok.pad_token_id
    return tok, model


def rewards(model, tok, texts: list[str], max_length: int = 1024) -> torch.Tensor:
    """One scalar per text (right padding; the head reads each text's last real token)."""
    device = next(model.parameters()).device
    ids = [tok(t, truncation=True, max_length=max_length).input_ids for t in texts]
    batch = pad(ids, tok.pad_token_id, device)
    mask = pad([[1] * len(s) for s in ids], 0, device)
    return model(input_ids=batch, attention_mask=mask).logits[:, 0].float()


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
    device = setup(cfg)
    out = check_out(out, overwrite, run)
    pairs = records(load_labelled(run, searched_only), "rm")
    base = base_model_path(run, model)
    tok, rm = load_reward(base, pick_dtype(cfg.dtype, device), cfg.trust_remote_code)
    rm = add_lora(rm.to(device), cfg, "SEQ_CLS")

    def loss_fn(idx: list[int]) -> torch.Tensor:
        chosen = [pairs[i]["prompt"] + pairs[i]["chosen"] for i in idx]
        rejected = [pairs[i]["prompt"] + pairs[i]["rejected"] for i in idx]
        r = rewards(rm, tok, chosen + rejected, cfg.max_length)
        return -F.logsigmoid(r[: len(idx)] - r[len(idx) :]).mean()

    losses = train_loop(rm, len(pairs), loss_fn, cfg)
    info = meta("reward", str(run), base, cfg, losses, pairs=len(pairs))
    save_model(rm, tok, out, info)
    return info
