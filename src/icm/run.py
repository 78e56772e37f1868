"""A run is a folder: config.json, state.json, trace.jsonl, then labels.jsonl and summary.json.

`state.json` is replaced atomically after every iteration, so a killed run resumes exactly where
its last complete iteration left it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .config import RunConfig
from .core.model import LabelModel, token_counts
from .core.search import Search, State, Step
from .errors import IcmError, RunError
from .tasks import Dataset, Task, get_task, load_task_spec

CONFIG, STATE, TRACE, LABELS, SUMMARY = (
    "config.json",
    "state.json",
    "trace.jsonl",
    "labels.jsonl",
    "summary.json",
)


def resolve_task(name: str) -> Task:
    """A registered task name, or the path of a custom task spec."""
    if Path(name).suffix in (".yaml", ".yml", ".json"):
        return load_task_spec(name)
    return get_task(name)


def load_data(cfg: RunConfig) -> tuple[Task, Dataset]:
    task = resolve_task(cfg.task)
    if not cfg.data:
        raise IcmError("no data file: pass --data FILE")
    data = task.load(cfg.data)
    if cfg.limit is not None:
        data = data.first_groups(cfg.limit)
    if len(data) < 2:
        raise IcmError(f"{cfg.data}: ICM needs at least 2 examples, got {len(data)}")
    return task, data


def prepare(cfg: RunConfig) -> LabelModel:
    """Check the data, load the model, check that every example fits its context: bad input
    fails here, before a run folder is created or touched."""
    task, data = load_data(cfg)
    model = make_model(cfg, task)
    context = getattr(model, "max_context", None)
    counts = token_counts(model, [ex.prompt for ex in data.examples]) if context else None
    if counts:
        task.check_lengths(data, counts, context)
    if cfg.iterative_finetune:
        from .iterative import check

        check(cfg, data, batches(data, cfg, model))
    return model


def make_model(cfg: RunConfig, task: Task) -> LabelModel:
    """The backend named in the config, with the task's prompt format."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if cfg.backend == "transformers":
        from .backends.transformers import TransformersModel

        return TransformersModel.load(
            cfg.model,
            fmt=task.fmt,
            scorer=cfg.scorer,
            device=cfg.device,
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
    if cfg.backend == "openai":
        from .backends.openai import OpenAIModel, api_key_from_env

        if not cfg.base_url:
            raise IcmError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        return OpenAIModel(
            cfg.base_url,
            cfg.model,
            fmt=task.fmt,
            top_logprobs=cfg.top_logprobs,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            retries=cfg.retries,
            api_key=api_key_from_env(),
            call_cache=cfg.call_cache,
        )
    raise IcmError(f"unknown backend {cfg.backend!r}; choose transformers or openai")


SUMMED = ("inconsistencies", "searched", "iterations", "accepted", "model_calls", "tokens")


def batches(data: Dataset, cfg: RunConfig, model: LabelModel) -> list[list[int]]:
    """Cut the data into batches of whole groups, in file order, by rows and by prompt tokens.

    A batch's prompts hold all its other labelled examples, so a batch must fit the context:
    `--context-tokens` (default: the model's context, when the backend knows it) bounds the sum
    of its demonstrations' tokens, `--batch-size` its rows.
    """
    limit_rows = cfg.batch_size or len(data)
    budget = cfg.context_tokens or getattr(model, "max_context", None)
    costs = [0] * len(data)
    if budget:
        prompts = [ex.prompt for ex in data.examples]
        # Without the model's tokenizer, about three characters a token (a guess on the safe side).
        costs = [n + 3 for n in token_counts(model, prompts) or [len(p) // 3 + 1 for p in prompts]]
    # Every prompt is the batch's other demonstrations plus one query: keep room for the longest.
    room = budget - max(costs) if budget else float("inf")
    groups: dict[object, list[int]] = {}
    for i, ex in enumerate(data.examples):
        groups.setdefault(ex.group if ex.group is not None else ("row", i), []).append(i)
    parts: list[list[int]] = [[]]
    used = 0
    for members in groups.values():
        cost = sum(costs[i] for i in members)
        if parts[-1] and (len(parts[-1]) + len(members) > limit_rows or used + cost > room):
            parts.append([])
            used = 0
        parts[-1].extend(members)
        used += cost
    return parts


def agreement(labels: list[int], gold: list[int | None]) -> float | None:
    """Fraction of labelled examples with gold whose ICM label matches it (reporting only)."""
    pairs = [(y, g) for y, g in zip(labels, gold, strict=True) if y >= 0 and g is not None]
    return sum(y == g for y, g in pairs) / len(pairs) if pairs else None


@dataclass
class Run:
    folder: Path
    cfg: RunConfig

    @staticmethod
    def check_new(folder: str | Path, overwrite: bool = False) -> None:
        """A new run may not clobber a file, or an existing run unless asked to."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{folder}: exists and is not a folder")
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise RunError(
                f"{folder}: already exists and is not empty: pass --overwrite, or --resume it"
            )

    @classmethod
    def create(cls, cfg: RunConfig, folder: str | Path, overwrite: bool = False) -> Run:
        folder = Path(folder)
        cls.check_new(folder, overwrite)
        try:
            if folder.exists():
                for name in (CONFIG, STATE, TRACE, LABELS, SUMMARY):
                    (folder / name).unlink(missing_ok=True)
                shutil.rmtree(folder / "batches", ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_json(folder / CONFIG, cfg.to_json())
        except OSError as e:
            raise RunError(f"{folder}: cannot create the run folder: {e.strerror}") from e
        return cls(folder, cfg)

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        folder = Path(folder)
        try:
            cfg = RunConfig.from_json(json.loads((folder / CONFIG).read_text()))
        except FileNotFoundError as e:
            raise RunError(f"{folder}: not a run folder (no {CONFIG})") from e
        except (json.JSONDecodeError, TypeError) as e:
            raise RunError(f"{folder / CONFIG}: unreadable: {e}") from e
        return cls(folder, cfg)

    def execute(
        self,
        model: LabelModel | None = None,
        on_step: Callable[[Step, State, dict], None] | None = None,
    ) -> dict:
        """Search every batch (from its checkpoint if it has one) until the configured
        iterations; write labels.jsonl and summary.json and return the summary.

        A data set that fits one batch keeps the flat layout; otherwise each batch gets its own
        folder `batches/NNN/` with the same files, and the top level holds the merged outputs.
        """
        cfg = self.cfg
        atomic.sweep(self.folder)  # only one process works on a run folder
        task, data = load_data(cfg)
        model = model or make_model(cfg, task)
        parts = batches(data, cfg, model)
        if cfg.iterative_finetune:
            from .iterative import execute_iterative

            return execute_iterative(self, task, data, parts, model, on_step)
        if len(parts) == 1:
            return self.search_batch(self.folder, data, model, task.rule, cfg.seed, on_step)
        summaries = self.search_batches(task, data, parts, lambda b: model, on_step=on_step)
        return self.merge(data, parts, summaries)

    def batch_folder(self, b: int) -> Path:
        return self.folder / "batches" / f"{b:03d}"

    def search_batches(
        self,
        task: Task,
        data: Dataset,
        parts: list[list[int]],
        model_for: Callable[[int], LabelModel],
        after: Callable[[int], None] | None = None,
        on_step: Callable[[Step, State, dict], None] | None = None,
    ) -> list[dict]:
        """Search the batches in order, each in `batches/NNN/` from its checkpoint; a finished
        batch is not searched again. `model_for(b)` is asked for batch b's model only when b
        still needs a search; `after(b)` runs once batch b has its labels."""
        summaries = []
        for b, idx in enumerate(parts):
            folder = self.batch_folder(b)
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / SUMMARY).exists() and (folder / LABELS).exists():
                summaries.append(json.loads((folder / SUMMARY).read_text()))
            else:

                def step_b(step: Step, state: State, row: dict, b: int = b) -> None:
                    if on_step:
                        on_step(step, state, {**row, "batch": b + 1, "batches": len(parts)})

                seed = self.cfg.seed + b
                summaries.append(
                    self.search_batch(
                        folder, data.subset(idx), model_for(b), task.rule, seed, step_b
                    )
                )
            if after:
                after(b)
        return summaries

    def merge(self, data: Dataset, parts: list[list[int]], summaries: list[dict]) -> dict:
        """labels.jsonl in the input's row order, and one summary over the batches."""
        rows: list[dict] = [{}] * len(data)
        for b, idx in enumerate(parts):
            labelled = atomic.read_jsonl(self.batch_folder(b) / LABELS)
            for i, row in zip(idx, labelled, strict=True):
                rows[i] = {**row, "icm_batch": b}
        atomic.write_jsonl(self.folder / LABELS, rows)
        final = [int(r["icm_label"]) for r in rows]
        total = {k: sum(s[k] for s in summaries) for k in SUMMED}
        summary = {
            "utility": sum(s["utility"] for s in summaries),
            "inconsistencies": total["inconsistencies"],
            "examples": len(data),
            "batches": len(parts),
            "searched": total["searched"],
            "labels": {"true": int(sum(final)), "false": int(len(final) - sum(final))},
            "agreement": agreement(final, data.gold),
            "gold_available": int(sum(g is not None for g in data.gold)),
            **{k: total[k] for k in ("iterations", "accepted", "model_calls", "tokens")},
            "seconds": round(sum(s["seconds"] for s in summaries), 3),
            "per_batch": summaries,
        }
        if any(s.get("cached_tokens") for s in summaries):
            summary["cached_tokens"] = sum(s.get("cached_tokens", 0) for s in summaries)
        atomic.write_json(self.folder / SUMMARY, summary)
        return summary

    def search_batch(
        self,
        folder: Path,
        data: Dataset,
        model: LabelModel,
        rule: str,
        seed: int,
        on_step: Callable[[Step, State, dict], None] | None = None,
    ) -> dict:
        """Algorithm 1 on one batch, checkpointed in `folder` after every iteration."""
        cfg = self.cfg
        search = Search(data.examples, model, rule, cfg.search)
        total = cfg.iterations if cfg.iterations is not None else 2 * len(data)
        stats = {"seconds": 0.0, "calls": 0, "tokens": 0}
        base_calls, base_tokens = model.calls, model.tokens
        base_cached = getattr(model, "cached_tokens", 0)  # prompt tokens a server reused
        t0 = time.perf_counter()
        state_path, trace_path = folder / STATE, folder / TRACE

        def counters() -> dict:
            return {
                "seconds": stats["seconds"] + time.perf_counter() - t0,
                "calls": stats["calls"] + model.calls - base_calls,
                "tokens": stats["tokens"] + model.tokens - base_tokens,
                "cached_tokens": stats.get("cached_tokens", 0)
                + getattr(model, "cached_tokens", 0)
                - base_cached,
            }

        if state_path.exists():
            try:
                saved = json.loads(state_path.read_text())
                stats = {k: saved.pop(k) for k in ("seconds", "calls", "tokens")}
                stats["cached_tokens"] = saved.pop("cached_tokens", 0)
                state = State.from_json(saved)
                search.resume(state)
            except (ValueError, KeyError, TypeError) as e:
                raise RunError(f"{state_path}: unreadable checkpoint: {e}") from e
            # The trace may hold one line past the checkpoint (killed between the two writes).
            if trace_path.exists():
                rows = [r for r in atomic.read_jsonl(trace_path) if r["n"] <= state.iteration]
                atomic.write_jsonl(trace_path, rows)
        else:
            if len(data.examples) < 2:
                raise IcmError(f"{cfg.data}: ICM needs at least 2 examples, got {len(data)}")
            state = search.start(seed)
            atomic.write_json(state_path, {**state.to_json(), **counters()})
        for step in search.run(state, total):
            row = {
                "n": step.n,
                "T": step.temperature,
                "example": data.examples[step.index].uid,
                "proposed": step.proposed,
                "previous": step.previous,
                "delta": step.delta,
                "accepted": step.accepted,
                "skipped": step.skipped,
                "U": step.utility,
                "inconsistencies": step.inconsistencies,
                "fixes": step.fixes,
                "labelled": sum(y >= 0 for y in state.labels),
                "agreement": agreement(state.labels, data.gold),
            }
            atomic.append_jsonl(trace_path, row)
            c = counters()
            atomic.write_json(state_path, {**state.to_json(), **c})
            if on_step:
                on_step(step, state, {**row, **c, "total": total})
        return self.finish(folder, search, state, data, counters)

    def finish(
        self,
        folder: Path,
        search: Search,
        state: State,
        data: Dataset,
        counters: Callable[[], dict],
    ) -> dict:
        terms = search.final_terms(state.labels)
        logodds = terms[:, 1] - terms[:, 0]
        final = [y if y >= 0 else int(lo > 0) for y, lo in zip(state.labels, logodds, strict=True)]
        atomic.write_jsonl(
            folder / LABELS,
            (
                {**row, "icm_label": bool(y), "icm_logodds": float(lo), "icm_searched": s >= 0}
                for row, y, lo, s in zip(data.rows, final, logodds, state.labels, strict=True)
            ),
        )
        ev = search.evaluate(state.labels)
        c = counters()
        summary = {
            "utility": ev.utility,
            "predictability": ev.predictability,
            "inconsistencies": ev.inconsistencies,
            "examples": len(data),
            "searched": int(sum(y >= 0 for y in state.labels)),
            "labels": {"true": int(sum(final)), "false": int(len(final) - sum(final))},
            "agreement_searched": agreement(state.labels, data.gold),
            "agreement": agreement(final, data.gold),
            "gold_available": int(sum(g is not None for g in data.gold)),
            "iterations": state.iteration,
            "accepted": state.accepted,
            "model_calls": c["calls"],
            "tokens": c["tokens"],
            "seconds": round(c["seconds"], 3),
            "mean_abs_logodds": float(np.abs(logodds).mean()),
        }
        if c["cached_tokens"]:
            summary["cached_tokens"] = c["cached_tokens"]
        atomic.write_json(folder / SUMMARY, summary)
        return summary
