"""Completions from a policy, and the two judges of `icm compare`.

- `RewardJudge`: a reward model (a one-output sequence classifier) scores each completion on its
  own, so the order the two are shown in cannot matter.
- `PairwiseJudge`: label-free. The model of an ICM run of a comparison task (Alpaca's "Response
  1 is more helpful and harmless than Response 2") reads the run's ICM-labelled comparisons as
  demonstrations, then the claim about the two completions, in both orders; its verdict is the
  mean of the two log-odds, and the orders' disagreement is reported as position bias.

A judge's `margins(prompts, a, b)` is > 0 where completion a is the better one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..backends import make_model
from ..backends.loading import load_pretrained, pick_dtype
from ..core.consistency import get_rule
from ..core.model import token_counts
from ..errors import ContextLengthError, IcmError, ModelError
from ..export.records import response_fields
from ..run.folder import MARKER, RunFolder
from ..tasks import resolve_task
from ..train.prompts import Prompt
from ..train.reward import check_classifier, load_reward, rewards
from ..train.rlconfig import CompareConfig
from .icl import choose_demos, read_run_labels


class Policy:
    """A policy to sample completions from (anything --model loads)."""

    def __init__(self, name: str, cfg: CompareConfig, device: torch.device) -> None:
        dtype = pick_dtype(cfg.dtype, device)
        trust = cfg.trust_remote_code
        self.tok, model = load_pretrained(name, dtype=dtype, trust_remote_code=trust)
        self.model, self.cfg, self.device = model.to(device).eval(), cfg, device
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tok(texts).input_ids]

    def complete(self, prompts: list[Prompt]) -> tuple[list[str], list[int]]:
        """One completion per prompt and its length in tokens. Sampling is seeded per batch, so
        two identical policies give identical completions."""
        cfg, tok = self.cfg, self.tok
        sample = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0}
        how = sample if cfg.temperature > 0 else {"do_sample": False}
        ends = {tok.pad_token_id, tok.eos_token_id}
        texts, lengths = [], []
        for k in range(0, len(prompts), cfg.batch_size):
            part = [p.text for p in prompts[k : k + cfg.batch_size]]
            enc = tok(part, return_tensors="pt", padding=True).to(self.device)
            torch.manual_seed(cfg.seed + k)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, **how
                )
            new = out[:, enc.input_ids.shape[1] :]
            texts += tok.batch_decode(new, skip_special_tokens=True)
            lengths += [sum(1 for t in row if t not in ends) for row in new.tolist()]
        return texts, lengths


class RewardJudge:
    """A reward model's scores, r(prompt + a) - r(prompt + b)."""

    kind = "reward-model"

    def __init__(self, path: str, cfg: CompareConfig, device: torch.device) -> None:
        check_classifier(path, "judge", cfg.trust_remote_code)
        dtype = pick_dtype(cfg.dtype, device)
        self.tok, model = load_reward(path, dtype, cfg.trust_remote_code)
        self.model, self.path, self.batch = model.to(device).eval(), path, cfg.batch_size

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.path, "orders": 1}

    def score(self, texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for k in range(0, len(texts), self.batch):
                out += rewards(self.model, self.tok, texts[k : k + self.batch], 10**7).tolist()
        return np.array(out)

    def margins(self, prompts: list[Prompt], a: list[str], b: list[str]) -> dict:
        scores = [
            self.score([p.text + c for p, c in zip(prompts, side, strict=True)]) for side in (a, b)
        ]
        return {"margin": scores[0] - scores[1], "reward_a": scores[0], "reward_b": scores[1]}


class PairwiseJudge:
    """The ICM comparison prompt, after the run's ICM-labelled comparisons as demonstrations."""

    kind = "icm-pairwise"

    def __init__(self, run: str, cfg: CompareConfig) -> None:
        folder = RunFolder(run)
        run_cfg = folder.read_config()
        self.task = task = resolve_task(run_cfg.task)
        fields = response_fields(task)
        self.query_field = [f for f in task.fields if f not in fields]
        if not get_rule(task.rule).pair_key or len(fields) != 2 or len(self.query_field) != 1:
            raise IcmError(
                f"{run}: task {task.name} does not compare two responses to one query; a "
                "pairwise judge needs a run of a comparison task such as alpaca"
            )
        self.fields, self.run = fields, run
        data, labels = read_run_labels(folder.path, task)
        self.demo_pool = [ex.prompt for ex in data.examples]
        self.demo_labels = labels
        self.cfg = cfg
        self.model = make_model(
            dataclasses.replace(
                run_cfg,
                threads=cfg.threads or run_cfg.threads,
                device=cfg.device or run_cfg.device,
                trust_remote_code=cfg.trust_remote_code,
            ),
            task.fmt,
        )
        self.demos: list[int] = []

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "path": self.run,
            "task": self.task.name,
            "orders": 2,
            "demos": len(self.demos),
            "demo_true": int(sum(self.demo_labels[i] for i in self.demos)),
            "labels": "ICM (no human labels)",
        }

    def queries(self, prompts: list[Prompt], a: list[str], b: list[str]) -> list[str]:
        """The claim "Response 1 is better" for (a, b) and for (b, a), prompt by prompt."""
        q, (f1, f2) = self.query_field[0], self.fields
        group = {self.task.group: 0} if self.task.group else {}
        rows = []
        for p, x, y in zip(prompts, a, b, strict=True):
            rows.append({q: p.question, f1: x, f2: y, **group})
            rows.append({q: p.question, f1: y, f2: x, **group})
        return [ex.prompt for ex in self.task.build(rows, "the completions").examples]

    def margins(self, prompts: list[Prompt], a: list[str], b: list[str]) -> dict:
        queries = self.queries(prompts, a, b)
        counts = token_counts(self.model, queries) or [len(x) // 2 + 1 for x in queries]
        longest = max(counts)
        budget = self.cfg.context_tokens or self.model.max_context
        cfg = self.cfg
        self.demos, _ = choose_demos(
            self.demo_pool, self.model, self.task, budget, cfg.max_demos, longest, cfg.seed
        )
        shown = [self.demo_pool[i] for i in self.demos]
        labels = [self.demo_labels[i] for i in self.demos]
        try:
            lp = self.model.query_logprobs(shown, labels, queries)
        except ContextLengthError as e:
            raise IcmError(f"{e} (compare: lower --context-tokens or --max-demos)") from e
        lo = lp[:, 1] - lp[:, 0]
        ab, ba = lo[0::2], lo[1::2]
        return {"margin": (ab - ba) / 2, "logodds_ab": ab, "logodds_ba": ba}


def open_judge(path: str, cfg: CompareConfig, device: torch.device):
    """A pairwise judge for an ICM run folder, else a reward-model judge; one line if neither."""
    if not path:
        raise IcmError("--judge: a reward-model folder, or an ICM run folder of a comparison task")
    p = Path(path)
    if (p / MARKER).is_file() or (p / "config.json").is_file() and (p / "labels.jsonl").is_file():
        return PairwiseJudge(path, cfg)
    try:
        return RewardJudge(path, cfg, device)
    except ModelError as e:
        raise ModelError(f"--judge {e}") from e
