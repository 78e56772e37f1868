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

import csv
import io
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from . import files
from .backends import make_model
from .checks import warnings
from .config import RunConfig
from .core.concept import concept_test
from .core.consistency import Constraint, Structure, constraints, violations
from .core.local import Change, settle
from .core.model import LabelModel, metered, token_counts
from .core.search import Search, State, Step
from .errors import ConfigError, DataError, RunError
from .runfolder import (
    FINAL,
    LABELS,
    STATE,
    SUMMARY,
    TRACE,
    Plan,
    RunFolder,
    data_fingerprints,
    input_files,
)
from .tasks import Dataset, Task, resolve_task
from .tasks.base import parse_label, read_rows


# -- data, model, plan -----------------------------------------------------------------------------
def load_data(cfg: RunConfig) -> tuple[Task, Dataset]:
    task = resolve_task(cfg.task)
    if not cfg.data:
        raise ConfigError("no data file: pass --data FILE")
    data = task.load(cfg.data)
    if cfg.limit is not None:
        data = data.first_groups(cfg.limit)
    if len(data) < 2:
        raise DataError(f"{cfg.data}: ICM needs at least 2 examples, got {len(data)}")
    return task, data


def model_identity(model: LabelModel) -> dict:
    """What the backend says about the weights it scores with (a resume must find the same)."""
    identity = getattr(model, "identity", None)
    return dict(identity) if identity else {"backend": type(model).__name__}


def split(data: Dataset, cfg: RunConfig, model: LabelModel) -> list[list[int]]:
    """Cut the data into batches of whole groups, in file order, by rows and by prompt tokens.

    A batch's prompts hold all its other labelled examples, so a batch must fit the context:
    `--context-tokens` (default: the model's context, when the backend knows it) bounds the sum
    of its demonstrations' tokens, `--batch-size` its rows. A batch of one row would be searched
    with no demonstration at all: it joins its neighbour when the two fit together.
    """
    limit_rows = cfg.batch_size or len(data)
    budget = cfg.context_tokens or getattr(model, "max_context", None)
    costs = [0] * len(data)
    if budget:
        prompts = [ex.prompt for ex in data.examples]
        # Without the model's tokenizer, about three characters a token (a guess on the safe side).
        costs = [n + 3 for n in token_counts(model, prompts) or [len(p) // 3 + 1 for p in prompts]]
    # Every prompt is the batch's other demonstrations plus one query: keep room for the longest.
    room = budget - max(costs) if budget else math.inf
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
    for k in [k for k, p in enumerate(parts) if len(p) == 1 and len(parts) > 1][::-1]:
        other = k - 1 if k else k + 1
        if sum(costs[i] for i in parts[other] + parts[k]) <= (budget or math.inf):
            parts[min(k, other)] = sorted(parts[k] + parts[other])
            del parts[max(k, other)]
    return parts


def make_plan(
    data: Dataset, task: Task, cfg: RunConfig, model: LabelModel, fixed: dict[int, int]
) -> Plan:
    return Plan(
        split(data, cfg, model),
        data_fingerprints(data, task.fmt, task.rule, fixed),
        model_identity(model),
    )


def read_fixed(path: str | None, task: Task, data: Dataset) -> dict[int, int]:
    """Labels a person gave, by row of `data`: a CSV or JSONL file whose rows hold the task's
    fields (to find the claim), the group when claims repeat, and `human_label` (blank: none).

    Only this file's labels are used: gold labels in the data file are never read."""
    if not path:
        return {}
    if Path(path).suffix.lower() == ".csv":
        text = files.read_text(path, "fixed-labels file")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        lines = list(range(1, len(rows) + 1))
    else:
        rows, lines = read_rows(Path(path))
    where: dict[str, list[int]] = {}
    for i, ex in enumerate(data.examples):
        where.setdefault(ex.prompt, []).append(i)
    fixed: dict[int, int] = {}
    for row, r in zip(rows, lines, strict=True):
        given = row.get("human_label")
        y = parse_label(None if given == "" else given, path, r, "human_label")
        if y is None:
            continue
        claim = {k: v for k, v in row.items() if k != task.label}
        if task.group:
            claim.setdefault(task.group, None)  # the group only tells repeated claims apart
        built = task.build([claim], path, [r])
        ex = built.examples[0]
        hits = where.get(ex.prompt, [])
        if len(hits) > 1:
            hits = [i for i in hits if str(data.examples[i].group) == str(ex.group)]
        if len(hits) != 1:
            found = "no claim" if not hits else "more than one claim"
            raise DataError(f"{path}: row {r}: matches {found} of {data.source}")
        fixed[hits[0]] = y
    return fixed


def agreement(labels: Sequence[int], gold: Sequence[int | None]) -> float | None:
    """Fraction of labelled examples with gold whose ICM label matches it (reporting only)."""
    pairs = [(y, g) for y, g in zip(labels, gold, strict=True) if y >= 0 and g is not None]
    return sum(y == g for y, g in pairs) / len(pairs) if pairs else None


# -- who searches a batch --------------------------------------------------------------------------
class Models(Protocol):
    """Hands the driver the model for each batch; `after(b, rows)` gets batch b's labelled rows
    when another batch follows it.

    `sequential`: batch b + 1 needs batch b finished (iterative ICM trains on it)."""

    sequential: bool

    def model_for(self, b: int) -> LabelModel: ...

    def after(self, b: int, rows: list[dict]) -> None: ...

    def names(self, batches: int) -> list[str]:
        """The model that labels each batch, for summary.json."""
        ...


@dataclass
class OneModel:
    """The same model for every batch."""

    model: LabelModel
    name: str
    sequential: bool = False

    def model_for(self, b: int) -> LabelModel:
        return self.model

    def after(self, b: int, rows: list[dict]) -> None:
        pass

    def names(self, batches: int) -> list[str]:
        return [self.name] * batches


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """What a run reports while it works; the command line draws it, a library caller may not."""

    def start(self, total: int, done: int) -> None:
        """`total` search iterations over every search of the run, `done` of them already."""

    def step(self, row: dict) -> None:
        """One iteration of one search: its trace row, with `batch`, `chain` and counters."""

    def phase(self, text: str) -> None:
        """A stretch of work that is not a search iteration (final labels, fine-tuning)."""


# -- one search ------------------------------------------------------------------------------------
class Stopped(Exception):
    """Another search of the run failed, or the run was interrupted: stop at a checkpoint."""


@dataclass
class Job:
    batch: int
    chain: int
    folder: Path
    data: Dataset
    seed: list[int]
    fixed: dict[int, int]
    batches: int = 1
    chains: int = 1

    @property
    def name(self) -> str:
        batch = f"batch {self.batch + 1}/{self.batches}" if self.batches > 1 else "the batch"
        return batch + (f", chain {self.chain + 1}/{self.chains}" if self.chains > 1 else "")


def read_state(job: Job) -> tuple[State, dict] | None:
    """The checkpoint of a search and its counters, or None when it has none yet."""
    path = job.folder / STATE
    if not path.exists():
        return None
    try:
        saved = files.read_json(path, "checkpoint")
        assert isinstance(saved, dict)
        stats = {k: saved.pop(k) for k in ("seconds", "calls", "tokens", "cached_tokens")}
        state = State.from_json(saved)
        assert len(state.labels) == len(job.data) and all(y in (-1, 0, 1) for y in state.labels)
    except DataError as e:
        raise RunError(f"{path}: unreadable checkpoint: {e}") from e
    except (AssertionError, KeyError, TypeError) as e:
        raise RunError(f"{path}: unreadable checkpoint (not what icm writes)") from e
    return state, stats


def search_job(
    job: Job,
    model: LabelModel,
    task: Task,
    cfg: RunConfig,
    total: int,
    stop: threading.Event,
    progress: Progress,
) -> dict:
    """Algorithm 1 on one batch with one seed, from its checkpoint, checkpointed after every
    iteration; then its final labels (final.json). Returns what final.json holds."""
    folder, data = job.folder, job.data
    folder.mkdir(parents=True, exist_ok=True)
    final_path, state_path, trace_path = folder / FINAL, folder / STATE, folder / TRACE
    search = Search(data.examples, model, task.rule, cfg.search, job.fixed)
    saved = read_state(job)
    if saved and saved[0].iteration > total:
        raise ConfigError(
            f"--iterations {total} is below the {saved[0].iteration} iterations {folder} has done"
        )
    if saved and final_path.exists():
        final = files.read_json(final_path, "search result")
        if isinstance(final, dict) and final.get("iterations") == total:
            return final
    t0 = time.perf_counter()
    with metered() as usage:
        if saved:
            state, stats = saved
            search.resume(state)
            # The trace may hold one line past the checkpoint (killed between the two writes).
            if trace_path.exists():
                rows = files.read_jsonl(trace_path, torn_tail=True)
                files.write_jsonl(trace_path, [r for r in rows if in_checkpoint(r, state)])
        else:
            stats = {"seconds": 0.0, "calls": 0, "tokens": 0, "cached_tokens": 0}
            state = search.start(job.seed)

        def counters() -> dict:
            return {
                "seconds": stats["seconds"] + time.perf_counter() - t0,
                "calls": stats["calls"] + usage.calls,
                "tokens": stats["tokens"] + usage.tokens,
                "cached_tokens": stats["cached_tokens"] + usage.cached_tokens,
            }

        if not saved:
            files.write_json(state_path, {**state.to_json(), **counters()})
        for step in search.run(state, total):
            if stop.is_set():
                raise Stopped()
            row = trace_row(step, state, data)
            files.append_jsonl(trace_path, row)
            c = counters()
            files.write_json(state_path, {**state.to_json(), **c})
            progress.step(
                {**row, **c, "batch": job.batch, "batches": job.batches, "chain": job.chain}
            )
        if search.cfg.polish or search.cfg.keep_best:
            progress.phase(f"{job.name}: polishing the labelling (moves while U rises)")
        for change in settle(search, state):
            if stop.is_set():
                raise Stopped()
            files.append_jsonl(trace_path, change_row(change, state, data))
            files.write_json(state_path, {**state.to_json(), **counters()})
        progress.phase(f"{job.name}: final labels and log-odds of {len(data)} claims")
        final = finish(search, state, data, counters)
    files.write_json(final_path, final)
    return final


def trace_row(step: Step, state: State, data: Dataset) -> dict:
    return {
        "n": step.n,
        "T": step.temperature,
        "example": data.examples[step.index].uid if step.index >= 0 else None,
        "proposed": step.proposed,
        "previous": step.previous,
        "delta": step.delta if math.isfinite(step.delta) else None,
        "accepted": step.accepted,
        "skipped": step.skipped,
        "U": step.utility,
        "inconsistencies": step.inconsistencies,
        "fixes": step.fixes,
        "labelled": sum(y >= 0 for y in state.labels),
        "agreement": agreement(state.labels, data.gold),
    }


def change_row(change: Change, state: State, data: Dataset) -> dict:
    """A trace line for one step of settling (after the iterations)."""
    return {
        "n": state.iteration,
        "polish": state.polish_moves,
        "step": change.kind,
        "changed": [data.examples[i].uid for i in change.changed],
        "U": change.utility,
        "inconsistencies": change.inconsistencies,
        "labelled": sum(y >= 0 for y in state.labels),
        "agreement": agreement(state.labels, data.gold),
    }


def in_checkpoint(row: dict, state: State) -> bool:
    """Whether a trace line describes work the checkpoint holds (a kill may leave one more)."""
    n = row.get("n", 0)
    if "polish" not in row:
        return n <= state.iteration
    done = state.polish_moves if state.polish_moves >= 0 else math.inf
    return n < state.iteration or (n == state.iteration and row["polish"] <= done)


def finish(search: Search, state: State, data: Dataset, counters: Callable[[], dict]) -> dict:
    """The search's final labels: its own where it labelled, else the argmax of the log-odds given
    its labelled set, decided under the rule with the searched labels kept."""
    terms = search.final_terms(state.labels)
    logodds = terms[:, 1] - terms[:, 0]
    margin = np.where(np.array(state.labels) >= 0, 0.0, logodds)
    final = search.structure.decode(margin, keep=state.labels)
    ev = search.evaluate(state.labels)
    c = counters()
    return {
        "labels": state.labels,
        "final": final,
        "logodds": [float(x) for x in logodds],
        "utility": ev.utility,
        "best_utility": max(state.best_utility, ev.utility),
        "predictability": ev.predictability,
        "inconsistencies": len(violations(search.cons, final)),
        "iterations": state.iteration,
        "accepted": state.accepted,
        **{k: round(v, 3) if k == "seconds" else v for k, v in c.items()},
    }


# -- chains of one batch ---------------------------------------------------------------------------
def combine(
    finals: list[dict],
    data: Dataset,
    cons: list[Constraint],
    fixed: dict[int, int],
    rule: str = "best-u",
) -> tuple[list[dict], dict]:
    """One batch's labelled rows from its chains, with each row's confidence: the mean over
    chains of the probability (sigmoid of the log-odds) that chain gives the row's label, which
    is low where chains disagree and where they agree weakly.

    best-u: the labels of the chain with the highest U, the objective ICM maximises (restarts of
    one search). vote: each row's majority (ties: the best chain), made consistent again."""
    best = max(range(len(finals)), key=lambda k: finals[k]["utility"])
    votes = np.array([f["final"] for f in finals])  # (chains, rows)
    logodds = np.array([f["logodds"] for f in finals])

    def confidence(labels: list[int]) -> np.ndarray:
        signed = np.where(np.array(labels) == 1, logodds, -logodds)
        return (1 / (1 + np.exp(-signed))).mean(axis=0)

    if rule == "vote":
        share = votes.mean(axis=0)
        labels = [int(s > 0.5) if s != 0.5 else votes[best][i] for i, s in enumerate(share)]
        margin = (2 * np.array(labels) - 1) * (2 * confidence(labels) - 1)  # > 0 leans True
        labels = Structure(cons, len(labels), fixed).decode(margin)
        searched = [all(f["labels"][i] >= 0 for f in finals) for i in range(len(labels))]
        shown = logodds.mean(axis=0)
    else:
        labels = [int(y) for y in votes[best]]
        searched = [y >= 0 for y in finals[best]["labels"]]
        shown = logodds[best]
    conf = confidence(labels)
    conf[list(fixed)] = 1.0  # a person's label
    agree = (votes == np.array(labels)).mean(axis=0)
    rows = [
        {
            **row,
            "icm_label": bool(y),
            "icm_logodds": float(lo),
            "icm_confidence": float(c),
            "icm_searched": s,
            **({"icm_fixed": True} if i in fixed else {}),
        }
        for i, (row, y, lo, c, s) in enumerate(
            zip(data.rows, labels, shown, conf, searched, strict=True)
        )
    ]
    pairwise = [
        float((votes[a] == votes[b]).mean())
        for a in range(len(finals))
        for b in range(a + 1, len(finals))
    ]
    summary = {
        "examples": len(data),
        "searched": int(sum(searched)),
        "inconsistencies": len(violations(cons, labels)),
        "labels": {"true": int(sum(labels)), "false": int(len(labels) - sum(labels))},
        "agreement": agreement(labels, data.gold),
        "chains": len(finals),
        "best_chain": best,
        "chain_agreement": float(np.mean(pairwise)) if pairwise else 1.0,
        "unanimous": float((agree == 1).mean()),
        "utility": finals[best]["utility"],
        "per_chain": [
            {k: v for k, v in f.items() if k not in ("labels", "final", "logodds")}
            | {"searched": int(sum(y >= 0 for y in f["labels"]))}
            | {"agreement": agreement(f["labels"], data.gold)}
            for f in finals
        ],
    }
    return rows, summary


def review(search: Search, data: Dataset, labels: list[int], seed: list[int]) -> dict:
    """What a batch's labels are worth, beside them: the model's zero-shot prior, the concept
    test, and (reporting only, after the search) U of the gold labelling where every row has
    gold, with which of search and objective fell short."""
    with metered() as used:
        out: dict = {"zero_shot_true": zero_shot_true(search.model, data)}
        rng = np.random.default_rng([*seed, 2**32 - 1])
        out["concept"] = concept_test(search, labels, rng)
        out["gold_utility"] = out["diagnosis"] = None
        if data.gold and all(g is not None for g in data.gold):
            gold = [int(g) for g in data.gold]  # type: ignore[arg-type]
            found = search.evaluate(labels).utility
            out["gold_utility"] = search.evaluate(gold).utility
            out["diagnosis"] = diagnose(found, out["gold_utility"], labels == gold)
    return out | {"review_calls": used.calls, "review_tokens": used.tokens}


def diagnose(found: float, gold: float, same: bool) -> str:
    """found-gold: the search found the gold labelling. search: the gold labelling scores
    higher than the one found (the search fell short). objective: the one found scores at least
    as high as gold yet differs (the objective prefers other labels)."""
    if same:
        return "found-gold"
    return "search" if gold > found + 1e-9 else "objective"


def zero_shot_true(model: LabelModel, data: Dataset) -> float:
    """The model's mean zero-shot probability of True over the batch: its prior, to compare the
    labels' True share with."""
    lp = model.query_logprobs([], [], [ex.prompt for ex in data.examples])
    return float(np.exp(lp[:, 1]).mean())


# -- the run ---------------------------------------------------------------------------------------
SUMMED = ("iterations", "accepted", "calls", "tokens", "cached_tokens", "seconds")


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
        """Search iterations of each batch: --iterations, else twice its rows."""
        return [self.cfg.iterations or 2 * len(p) for p in parts]

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
    ) -> dict:
        """Search every batch from its checkpoints, write labels.jsonl and summary.json, and
        return the summary. Only one process works on a run folder at a time."""
        cfg, folder = self.cfg, self.folder
        progress = progress or Progress()
        folder.lock()
        try:
            files.sweep(self.path)
            task, data = load_data(cfg)
            if models is None:
                model = model or make_model(cfg, task.fmt)
                models = self.default_models(model, task)
            fixed = read_fixed(cfg.fixed_labels, task, data)
            plan = self.plan(data, task, models.model_for(0), fixed)
            return self.search_all(task, data, plan.batches, models, progress, fixed)
        finally:
            folder.unlock()

    def default_models(self, model: LabelModel, task: Task) -> Models:
        if self.cfg.iterative_finetune:
            from .iterative import IterativeModels

            return IterativeModels(self.folder, self.cfg, task, model)
        return OneModel(model, self.cfg.model)

    def plan(self, data: Dataset, task: Task, model: LabelModel, fixed: dict[int, int]) -> Plan:
        """The saved plan, checked against the data and model now; or a new one, saved."""
        now = make_plan(data, task, self.cfg, model, fixed)
        saved = self.folder.read_plan()
        if saved is None:
            self.folder.write_plan(now)
            return now
        saved.check(now, self.path)
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
                summary |= review(search, sub, labels, [cfg.seed, b])
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
        summaries = [s for _, s in results]
        chains = [c for s in summaries for c in s["per_chain"]]
        final = [int(r["icm_label"]) for r in rows]
        summary = {
            "utility": sum(s["utility"] for s in summaries),
            "inconsistencies": sum(s["inconsistencies"] for s in summaries),
            "examples": len(data),
            "batches": len(parts),
            "chains": self.cfg.chains,
            "searched": sum(s["searched"] for s in summaries),
            "searched_share": sum(s["searched"] for s in summaries) / len(data),
            "labels": {"true": int(sum(final)), "false": int(len(final) - sum(final))},
            "agreement": agreement(final, data.gold),
            "gold_available": int(sum(g is not None for g in data.gold)),
            **{k: sum(c[k] for c in chains) for k in SUMMED if k != "calls"},
            "model_calls": sum(c["calls"] for c in chains),
            "mean_abs_logodds": float(np.mean([abs(r["icm_logodds"]) for r in rows])),
            "per_batch": summaries,
        }
        summary["seconds"] = round(summary["seconds"], 3)
        if summary["tokens"]:
            summary["cached_share"] = summary["cached_tokens"] / summary["tokens"]
        weights = [s["examples"] for s in summaries]
        summary["zero_shot_true"] = float(
            np.average([s["zero_shot_true"] for s in summaries], weights=weights)
        )
        if self.cfg.chains > 1:
            summary["chain_agreement"] = float(
                np.average([s["chain_agreement"] for s in summaries], weights=weights)
            )
            summary["chain_disagreement"] = float(
                np.average([1 - s["unanimous"] for s in summaries], weights=weights)
            )
        summary |= overall(summaries)
        summary["labelled_by"] = models.names(len(parts))
        summary["warnings"] = warnings(summary)
        files.write_json(self.path / SUMMARY, summary)
        return summary


def overall(summaries: list[dict]) -> dict:
    """The batches' reviews in one: gold U beside U found, what failed where, the concept test."""
    golds = [s["gold_utility"] for s in summaries]
    diagnoses = [s["diagnosis"] for s in summaries if s["diagnosis"]]
    tests = [s["concept"] for s in summaries]
    zs = [t["z"] for t in tests if t["z"] is not None]
    holding = sum(bool(t["holds"]) for t in tests)
    return {
        "gold_utility": None if None in golds else sum(golds),
        "diagnosis": {d: diagnoses.count(d) for d in sorted(set(diagnoses))} or None,
        "concept": {
            "z": float(np.mean(zs)) if zs else None,
            "bar": tests[0]["bar"],
            "above_null": float(np.mean([t["above_null"] for t in tests])),
            "batches_holding": holding,
            "batches": len(tests),
            "holds": holding * 2 >= len(tests) if zs else None,
        },
        "review_calls": sum(s["review_calls"] for s in summaries),
        "review_tokens": sum(s["review_tokens"] for s in summaries),
    }


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


__all__ = ["Job", "Models", "OneModel", "Progress", "Run", "load_data", "split"]
