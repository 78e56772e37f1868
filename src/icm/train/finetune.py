"""LoRA supervised fine-tuning of a run's model on its ICM labels.

A record is the zero-shot ICM prompt followed by the label word ICM chose, tokenised exactly as the
scorer does (BOS if the tokenizer adds one, the prompt, then the label word); the loss is the
cross-entropy of the label token(s) only, so the model learns the labels, not the claims. TRL's
SFTTrainer trains it on the records as token ids and labels (nothing is re-tokenised). The LoRA
weights are merged before saving, so the folder loads like any model: `icm run --model DIR`; with
`adapter` only the adapter is saved, which `icm run --model DIR` loads on top of its base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..backends.loading import adapter_base, load_pretrained, pick_dtype
from ..backends.tokens import hf_head
from ..errors import IcmError
from ..run.labels import Labelled, load_labelled
from .common import (
    TrainConfig,
    add_lora,
    base_model_path,
    check_out,
    fit,
    meta,
    save_model,
    setup,
    staging,
    trl_trainer,
)

IGNORE = -100


def encode(tok, data: Labelled) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, label ids) per record, as `TransformersModel` tokenises a zero-shot query."""
    fmt = data.task.fmt
    head = hf_head(tok, fmt.prefix)
    words = [tok.encode(w, add_special_tokens=False) for w in fmt.label_words]
    built = data.task.build(data.rows, data.source)
    return [
        (head + tok.encode(ex.prompt, add_special_tokens=False), words[int(y)])
        for ex, y in zip(built.examples, data.labels, strict=True)
    ]


def finetune_labels(
    sets: Sequence[Labelled],
    base: str,
    out: str | Path,
    cfg: TrainConfig | None = None,
    source: str = "",
) -> dict:
    """Fine-tune the model at `base` on the labels of `sets`; write the merged model (or, with
    `cfg.adapter`, the adapter) to `out` (which the caller has checked)."""
    cfg = cfg or TrainConfig()
    if cfg.adapter and adapter_base(base):
        raise IcmError(
            f"{base} is itself a LoRA adapter: an adapter on top of it would not load on its own; "
            "fine-tune without --adapter"
        )
    device = setup(cfg)
    dtype = pick_dtype(cfg.dtype, device)
    tok, model = load_pretrained(base, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    rows = [
        {"input_ids": prompt + label, "labels": [IGNORE] * len(prompt) + label}
        for data in sets
        for prompt, label in encode(tok, data)
    ]
    model = add_lora(model.to(device), cfg, "CAUSAL_LM")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    classes = trl_trainer(reward=False)
    with staging(out) as folder:
        # Rows come tokenised, label tokens alone in the loss; none is cut.
        losses = fit(*classes, model, tok, rows, cfg, folder, max_length=None)
        info = meta("sft", source, base, cfg, losses, records=len(rows))
        save_model(model, tok, folder, info, adapter=cfg.adapter)
    return info


def finetune(
    run: str | Path,
    out: str | Path,
    cfg: TrainConfig | None = None,
    searched_only: bool = False,
    model: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Fine-tune the run's model (or `model`) on the run's ICM labels."""
    out = check_out(out, overwrite, run, model)
    data = load_labelled(run, searched_only)
    return finetune_labels([data], base_model_path(run, model), out, cfg, source=str(run))
