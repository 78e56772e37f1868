"""A run: the batch driver between the search and the run folder.

A run cuts its data into batches of whole groups (decided once, saved in plan.json), searches
each batch with `chains` independent searches (Algorithm 1, checkpointed after every iteration),
combines a batch's chains into its labels, and merges the batches in input order. Up to
`workers` searches run at once; search (batch b, chain c) always uses the seed (seed, b, c), so
the labels do not depend on how many ran at once. Which model searches batch b is up to a
`Models` provider: one model for all, or, in iterative ICM, the model fine-tuned on the
batches before it.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from .. import files
from ..core.concept import combine_tests
from ..core.consistency import constraints
from ..core.model import LabelModel
from ..core.search import Search
from ..errors import RunError
from ..tasks import Dataset, Task
from ..tasks.base import agreement
from .chains import combine
from .checks import warnings
from .config import RunConfig
from .folder import (
    BATCHES,
    LABELS,
    STATE,
    SUMMARY,
    Plan,
    RunFolder,
    input_files,
)
from .job import LATER, Job, read_state, review, search_job
from .models import Models, OneModel
from .plan import Prepared, prepare
from .progress import Progress
from .tracking import tracked


class Run:
    """A run folder and its config: `Run.create(cfg, folder).execute(model)`."""

    def __init__(self, folder: RunFolder, cfg: RunConfig) -> None:
        self.folder, self.cfg = folder, cfg

    @property
    def path(self) -> Path:
        return self.folder.path

    @classmethod
    def check_new(cls, cfg: RunConfig, path: str | Path, overwrite: bool = False) -> None:
        cfg.check()
        RunFolder(path).check_new(overwrite, input_files(cfg))

    @classmethod
    def create(cls, cfg: RunConfig, path: str | Path, overwrite: bool = False) -> Run:
        cfg.check()
        folder = RunFolder(path)
        folder.create(cfg, overwrite, input_files(cfg))
        return cls(folder, cfg)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        folder = RunFolder(path)
        return cls(folder, folder.read_config())

    def iterations(self, data: Dataset, parts: list[list[int]]) -> list[int]:
        """Search iterations of each batch: --iterations, else --per-example times its rows."""
        given, per = self.cfg.iterations, self.cfg.search.per_example
        return [math.ceil(per * len(p)) if given is None else given for p in parts]

    def done(self) -> int:
        """The most iterations any search of this run has checkpointed."""
        states = self.path.glob("batches/*/chain-*/" + STATE)
        out = 0
        for p in states:
            saved = files.read_json(p, "checkpoint")
            if isinstance(saved, dict) and isinstance(saved.get("iteration"), int):
                out = max(out, saved["iteration"])
        return out

    def execute(
        self,
        model: LabelModel | None = None,
        progress: Progress | None = None,
        models: Models | None = None,
        prepared: Prepared | None = None,
    ) -> dict:
        """Search every batch from its checkpoints, write labels.jsonl and summary.json, and
        return the summary. Only one process works on a run folder at a time.

        `prepared`: the inputs `prepare(cfg)` read and checked (the command line does so before
        it creates the folder); else they are prepared here, with `model` (or the first of
        `models`, or the model the config names)."""
        self.t0 = time.perf_counter()
        self.folder.lock()
        progress = progress or Progress()
        try:
            progress = tracked(progress, self.cfg.report_to, self.path)
            self.folder.check_writable()
            files.sweep(self.path)
            if prepared is None:
                prepared = prepare(self.cfg, model or (models.model_for(0) if models else None))
            task, data, fixed = prepared.task, prepared.data, prepared.fixed
            models = models or self.default_models(prepared.model, task)
            plan = self.plan(prepared.plan, data)
            return self.search_all(task, data, plan.batches, models, progress, fixed)
        finally:
            progress.close()
            self.folder.unlock()

    def default_models(self, model: LabelModel, task: Task) -> Models:
        if self.cfg.iterative_finetune:
            from .iterative import IterativeModels

            return IterativeModels(self.folder, self.cfg, task, model)
        return OneModel(model, self.cfg.model)

    def plan(self, now: Plan, data: Dataset) -> Plan:
        """The saved plan, checked against the one the inputs make now; or that one, saved."""
        saved = self.folder.read_plan()
        if saved is None and any(self.path.glob(f"{BATCHES}/*/chain-*/{STATE}")):
            raise RunError(
                f"{self.path}: plan.json is missing but searches have checkpoints: a plan is "
                "never made again over them; start afresh with a new --out"
            )
        if saved is None:
            self.folder.write_plan(now)
            return now
        saved.check(now, self.path)
        saved.check_batches(data, self.path)
        return saved

    def search_all(
        self,
        task: Task,
        data: Dataset,
        parts: list[list[int]],
        models: Models,
        progress: Progress,
        fixed: dict[int, int],
    ) -> dict:
        cfg = self.cfg
        totals = self.iterations(data, parts)
        local = [{k: fixed[i] for k, i in enumerate(idx) if i in fixed} for idx in parts]
        jobs = [
            [
                Job(
                    b,
                    c,
                    self.folder.chain(b, c),
                    data.subset(idx),
                    [cfg.seed, b, c],
                    local[b],
                    len(parts),
                    cfg.chains,
                )
                for c in range(cfg.chains)
            ]
            for b, idx in enumerate(parts)
        ]
        progress.start(sum(totals) * cfg.chains, self.done_iterations(jobs, totals))
        stop = threading.Event()
        finals: dict[tuple[int, int], dict] = {}

        def work(job: Job) -> None:
            model = models.model_for(job.batch)
            finals[job.batch, job.chain] = search_job(
                job, model, task, cfg, totals[job.batch], stop, progress
            )

        results: list[tuple[list[dict], dict]] = []
        waves = [[j for b in jobs for j in b]] if not models.sequential else jobs
        for wave in waves:
            run_parallel(wave, work, cfg.workers, stop)
            for b in sorted({j.batch for j in wave}):
                sub = data.subset(parts[b])
                cons = constraints(task.rule, sub.examples)
                chains = [finals[b, c] for c in range(cfg.chains)]
                rows, summary = combine(chains, sub, cons, local[b], cfg.combine)
                where = f"batch {b + 1}/{len(parts)}" if len(parts) > 1 else "the batch"
                progress.phase(f"{where}: the model's zero-shot labels and the concept test")
                model = models.model_for(b)
                search = Search(sub.examples, model, task.rule, cfg.search, local[b])
                labels = [int(r["icm_label"]) for r in rows]
                told = functools.partial(progress.part, f"{where}: concept test, labellings")
                summary |= review(search, sub, labels, [cfg.seed, b], told)
                results.append((rows, summary))
                if models.sequential and b + 1 < len(parts):
                    models.after(b, rows)
        return self.merge(data, parts, results, models)

    @staticmethod
    def done_iterations(jobs: list[list[Job]], totals: list[int]) -> int:
        done = 0
        for b, batch in enumerate(jobs):
            for job in batch:
                saved = read_state(job)
                done += min(saved[0].iteration, totals[b]) if saved else 0
        return done

    def merge(
        self,
        data: Dataset,
        parts: list[list[int]],
        results: list[tuple[list[dict], dict]],
        models: Models,
    ) -> dict:
        """labels.jsonl in the input's row order, and one summary over the batches."""
        rows: list[dict] = [{}] * len(data)
        for b, (idx, (labelled, _)) in enumerate(zip(parts, results, strict=True)):
            for i, row in zip(idx, labelled, strict=True):
                rows[i] = {**row, "icm_batch": b}
        files.write_jsonl(self.path / LABELS, rows)
        summary = summarise(data, rows, [s for _, s in results], self.cfg.chains)
        summary["wall_seconds"] = round(time.perf_counter() - self.t0, 3)
        summary["labelled_by"] = models.names(len(parts))
        summary["warnings"] = warnings(summary)
        files.write_json(self.path / SUMMARY, summary)
        return summary


def summarise(data: Dataset, rows: list[dict], summaries: list[dict], chains: int) -> dict:
    """One summary over the batches' summaries and the merged rows (labels in input order)."""
    per_chain = [c for s in summaries for c in s["per_chain"]]
    final = [int(r["icm_label"]) for r in rows]
    cost = costs(per_chain, [s["review_cost"] for s in summaries])
    summary = {
        "utility": sum(s["utility"] for s in summaries),
        "inconsistencies": sum(s["inconsistencies"] for s in summaries),
        "examples": len(data),
        "batches": len(summaries),
        "chains": chains,
        "searched": sum(s["searched"] for s in summaries),
        "searched_share": sum(s["searched"] for s in summaries) / len(data),
        "labels": {"true": int(sum(final)), "false": int(len(final) - sum(final))},
        "agreement": agreement(final, data.gold),
        "gold_available": int(sum(g is not None for g in data.gold)),
        **{k: sum(c[k] for c in per_chain) for k in ("iterations", "accepted")},
        "cost": cost,
        # What was spent in all (the search's and the review's, apart in `cost`):
        "model_calls": cost["total"]["calls"],
        **{k: cost["total"][k] for k in ("tokens", "cached_tokens", "seconds")},
        **{k: sum(c.get(k, 0) for c in per_chain) for k in LATER},
        "mean_abs_logodds": float(np.mean([abs(r["icm_logodds"]) for r in rows])),
        "per_batch": summaries,
    }
    if summary["tokens"]:
        summary["cached_share"] = summary["cached_tokens"] / summary["tokens"]
    if summary["scores"]:
        summary["approximate_share"] = summary["approximate_scores"] / summary["scores"]
    weights = [s["examples"] for s in summaries]
    summary["zero_shot_true"] = float(
        np.average([s["zero_shot_true"] for s in summaries], weights=weights)
    )
    if chains > 1:
        summary["chain_agreement"] = float(
            np.average([s["chain_agreement"] for s in summaries], weights=weights)
        )
        summary["chain_disagreement"] = float(
            np.average([1 - s["unanimous"] for s in summaries], weights=weights)
        )
    return summary | overall(summaries)


COST = ("calls", "tokens", "cached_tokens", "seconds")
"""What a part of a run cost: model calls, prompt tokens (of them, from a server's cache) and
seconds of work (searches that run at once each count their own)."""


def costs(searches: list[dict], reviews: list[dict]) -> dict:
    """The searches' cost (every chain of every batch, over every session of a resumed run),
    the reviews' (this session's), and both together."""
    search = {k: sum(c[k] for c in searches) for k in COST}
    review = {k: sum(r[k] for r in reviews) for k in COST}
    total = {k: search[k] + review[k] for k in COST}
    for part in (search, review, total):
        part["seconds"] = round(part["seconds"], 3)
    return {"search": search, "review": review, "total": total}


def overall(summaries: list[dict]) -> dict:
    """The batches' reviews in one: gold U beside U found under the search's order and a fresh
    one, what failed where, the concept test."""
    golds = [s["gold_utility"] for s in summaries]
    fresh = [s["fresh_order"] for s in summaries]
    return {
        "gold_utility": None if None in golds else sum(golds),
        "diagnosis": _counts([s["diagnosis"] for s in summaries]),
        "fresh_order": None
        if None in fresh
        else {
            "utility": sum(f["utility"] for f in fresh),
            "gold_utility": sum(f["gold_utility"] for f in fresh),
            "diagnosis": _counts([f["diagnosis"] for f in fresh]),
        },
        "concept": combine_tests([s["concept"] for s in summaries]),
    }


def _counts(verdicts: list[str | None]) -> dict[str, int] | None:
    """{verdict: batches} over the batches that have one (None: none has)."""
    given = [v for v in verdicts if v]
    return {d: given.count(d) for d in sorted(set(given))} or None


def run_parallel(
    jobs: list[Job], work: Callable[[Job], None], workers: int, stop: threading.Event
) -> None:
    """`work(job)` for every job, up to `workers` at once. The first failure stops the others at
    their next checkpoint and is raised; so is an interrupt."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            work(job)
        return
    pool = ThreadPoolExecutor(min(workers, len(jobs)), thread_name_prefix="icm-search")
    futures = [pool.submit(work, job) for job in jobs]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
    except BaseException:
        stop.set()  # the others stop at their next checkpoint
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
