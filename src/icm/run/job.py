"""One search: Algorithm 1 on one batch with one seed, checkpointed after every iteration and
every move of settling; then its final labels, and the batch's review (prior, concept test,
gold U)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import files
from ..core.concept import concept_test
from ..core.consistency import violations
from ..core.local import Change, settle
from ..core.model import LabelModel, metered
from ..core.objective import Objective
from ..core.search import Search, State, Step
from ..errors import ConfigError, DataError, RunError, Stopped
from ..tasks import Dataset, Task
from ..tasks.base import agreement
from .config import RunConfig
from .folder import (
    FINAL,
    STATE,
    TRACE,
    fingerprint,
)
from .progress import Progress
from .readback import read_trace

COUNTERS = ("calls", "tokens", "cached_tokens", "scores", "approximate_scores")
"""Model work a search counts, kept in its checkpoint and final.json (with `seconds`)."""
LATER = ("scores", "approximate_scores")
"""Counters a checkpoint or final.json written by an earlier version lacks (read as 0)."""


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


ROWS_KEY = "rows_hash"
"""The checkpoint's field binding it to its batch's rows (absent in older runs' checkpoints)."""


def rows_hash(data: Dataset) -> str:
    return fingerprint([[ex.prompt, ex.group] for ex in data.examples])


def read_state(job: Job) -> tuple[State, dict] | None:
    """The checkpoint of a search and its counters, or None when it has none yet."""
    path = job.folder / STATE
    if not path.exists():
        return None
    try:
        saved = files.read_json(path, "checkpoint")
        assert isinstance(saved, dict)
        rows = saved.pop(ROWS_KEY, None)
        stats = {k: saved.pop(k, 0) if k in LATER else saved.pop(k) for k in COUNTERS}
        stats["seconds"] = saved.pop("seconds")
        state = State.from_json(saved)
    except DataError as e:
        raise RunError(f"{path}: unreadable checkpoint: {e}") from e
    except (AssertionError, KeyError, TypeError) as e:
        raise RunError(f"{path}: unreadable checkpoint (not what icm writes)") from e
    why = checkpoint_problem(state, stats, job)
    if rows is not None and rows != rows_hash(job.data):
        why = "it was saved for other rows than the plan now gives this batch (plan.json edited?)"
    if why:
        raise RunError(f"{path}: {why} (not what icm writes: was it edited?)")
    return state, stats


def number(v: object) -> bool:
    """A finite number read back (not a bool, not text)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def checkpoint_problem(state: State, stats: dict, job: Job) -> str | None:
    """What is wrong with a checkpoint read back, or None: every field's type and range, the
    labels' count and values, and the labels a person fixed."""

    def count(v: object) -> bool:
        return type(v) is int and v >= 0

    labels = state.labels
    if not isinstance(labels, list) or len(labels) != len(job.data):
        return f"'labels' must hold {len(job.data)} labels"
    if not all(type(y) is int and y in (-1, 0, 1) for y in labels):
        return "'labels' must be -1, 0 or 1"
    if not number(state.utility) or not count(state.inconsistencies):
        return "'utility' must be a finite number and 'inconsistencies' a count"
    bests = (state.best_utility, state.best_complete)
    if not all(number(v) or v == -math.inf for v in bests):
        return "'best_utility' and 'best_complete' must be numbers or null"
    if not count(state.iteration) or not count(state.accepted) or state.accepted > state.iteration:
        return "'iteration' and 'accepted' must be counts, accepted at most iteration"
    if type(state.polish_moves) is not int or state.polish_moves < -1:
        return "'polish_moves' must be a count or -1"
    if not all(count(stats[k]) for k in COUNTERS):
        return f"{', '.join(map(repr, COUNTERS))} must be counts"
    if stats["approximate_scores"] > stats["scores"]:
        return "'approximate_scores' must be at most 'scores'"
    if isinstance(stats["seconds"], bool) or not isinstance(stats["seconds"], int | float):
        return "'seconds' must be a number"
    if stats["seconds"] < 0:
        return "'seconds' must not be negative"
    if any(labels[i] != y for i, y in job.fixed.items()):
        return "a label a person fixed was changed"
    best = state.best_labels
    if best is not None and (
        not isinstance(best, list)
        or len(best) != len(labels)
        or not all(type(y) is int and y in (0, 1) for y in best)
    ):
        return "'best_labels' must be a complete labelling"
    rng = state.rng
    if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
        return "'rng' must be the state of numpy's PCG64 generator"
    return None


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
    job.folder.mkdir(parents=True, exist_ok=True)
    search = Search(job.data.examples, model, task.rule, cfg.search, job.fixed)
    saved = read_state(job)
    done = finished(job, search, saved, total)
    if done is not None:
        return done
    t0 = time.perf_counter()
    with metered() as usage:
        state, stats = resume(job, search, saved) if saved else (search.start(job.seed), None)
        before = stats or {"seconds": 0.0, **dict.fromkeys(COUNTERS, 0)}

        def counters() -> dict:
            done = {k: before[k] + getattr(usage, k) for k in COUNTERS}
            return {"seconds": before["seconds"] + time.perf_counter() - t0, **done}

        def checkpoint() -> None:
            bound = {ROWS_KEY: rows_hash(job.data)}
            files.write_json(job.folder / STATE, {**state.to_json(), **counters(), **bound})

        if not saved:
            checkpoint()
        walk(job, search, state, total, stop, progress, checkpoint, counters)
        progress.phase(f"{job.name}: final labels and log-odds of {len(job.data)} claims")
        final = finish(search, state, job.data, counters)
    files.write_json(job.folder / FINAL, final)
    return final


def finished(job: Job, search: Search, saved: tuple | None, total: int) -> dict | None:
    """The search's final.json when it already ran `total` iterations (checked), else None."""
    if saved and saved[0].iteration > total:
        raise ConfigError(
            f"--iterations {total} is below the {saved[0].iteration} iterations "
            f"{job.folder} has done"
        )
    if saved and (job.folder / FINAL).exists():
        final = read_final(job.folder / FINAL, saved[0], job, search)
        if final["iterations"] == total:
            return final
    return None


def resume(job: Job, search: Search, saved: tuple[State, dict]) -> tuple[State, dict]:
    """The search put back where its checkpoint left it, and the trace cut to match."""
    state, stats = saved
    try:
        search.resume(state)
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{job.folder / STATE}: 'rng' is not a generator state icm wrote") from e
    # The trace may hold one line past the checkpoint (killed between the two writes).
    trace = job.folder / TRACE
    if trace.exists():
        rows = read_trace(trace)
        files.write_jsonl(trace, [r for r in rows if in_checkpoint(r, state)])
    return state, stats


def walk(
    job: Job,
    search: Search,
    state: State,
    total: int,
    stop: threading.Event,
    progress: Progress,
    checkpoint: Callable[[], None],
    counters: Callable[[], dict],
) -> None:
    """The iterations up to `total`, then settling; a trace line and a checkpoint after each."""
    trace = job.folder / TRACE
    for step in search.run(state, total):
        if stop.is_set():
            raise Stopped()
        row = trace_row(step, state, job.data)
        files.append_jsonl(trace, row)
        checkpoint()
        where = {
            "batch": job.batch,
            "batches": job.batches,
            "chain": job.chain,
            "size": len(job.data),
        }
        progress.step({**row, **counters(), **where})
    if search.cfg.polish or search.cfg.keep_best:
        progress.phase(f"{job.name}: polishing the labelling (moves while U rises)")
    for change in settle(search, state):
        if stop.is_set():
            raise Stopped()
        files.append_jsonl(trace, change_row(change, state, job.data))
        checkpoint()


def read_final(path: Path, state: State, job: Job, search: Search) -> dict:
    """A search's final.json read back: every field checked against the checkpoint beside it,
    the batch and the rule (a final.json that was edited or copied is refused, naming it)."""
    final = files.read_json(path, "search result")
    why = final_problem(final, state, job, search)
    if why:
        raise RunError(f"{path}: {why} (not what icm writes: was it edited?)")
    assert isinstance(final, dict)
    return final


def final_problem(final: object, state: State, job: Job, search: Search) -> str | None:
    n = len(job.data)
    if not isinstance(final, dict):
        return "not an object"

    def number(k: str) -> bool:
        v = final.get(k)
        return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

    if final.get("labels") != state.labels:
        return "'labels' differ from the checkpoint's"
    labels, logodds = final.get("final"), final.get("logodds")
    if not isinstance(labels, list) or len(labels) != n or any(y not in (0, 1) for y in labels):
        return f"'final' must hold {n} labels 0 or 1"
    if any(
        type(y) is not int or (s >= 0 and y != s) for y, s in zip(labels, state.labels, strict=True)
    ):
        return "'final' must keep every label the search gave"
    if not (
        isinstance(logodds, list)
        and len(logodds) == n
        and all(not isinstance(x, bool) and isinstance(x, int | float) for x in logodds)
    ):
        return f"'logodds' must hold {n} numbers"
    if not all(number(k) for k in ("utility", "best_utility", "predictability", "seconds")):
        return "'utility', 'best_utility', 'predictability' and 'seconds' must be numbers"
    if "final_utility" in final and not number("final_utility"):
        return "'final_utility' must be a number"
    if final["seconds"] < 0:
        return "'seconds' must not be negative"
    if (final.get("iterations"), final.get("accepted")) != (state.iteration, state.accepted):
        return "'iterations' and 'accepted' differ from the checkpoint's"
    counts = [final.get(k, 0) if k in LATER else final.get(k) for k in COUNTERS]
    if not all(type(v) is int and v >= 0 for v in counts):
        return f"{', '.join(map(repr, COUNTERS))} must be counts"
    if final.get("inconsistencies") != len(violations(search.cons, labels)):
        return "'inconsistencies' does not match its labels"
    return None


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
    complete = search.evaluate(final)  # what chains are compared by
    c = counters()
    return {
        "labels": state.labels,
        "final": final,
        "logodds": [float(x) for x in logodds],
        "utility": ev.utility,
        "final_utility": complete.utility,
        "best_utility": max(state.best_utility, ev.utility),
        "predictability": ev.predictability,
        "inconsistencies": len(violations(search.cons, final)),
        "iterations": state.iteration,
        "accepted": state.accepted,
        **{k: round(v, 3) if k == "seconds" else v for k, v in c.items()},
    }


def review(
    search: Search,
    data: Dataset,
    labels: list[int],
    seed: list[int],
    scored_so_far: Callable[[int, int], None] | None = None,
) -> dict:
    """What a batch's labels are worth, beside them: the model's zero-shot prior, the concept
    test, and (reporting only, after the search) U of the gold labelling where every row has
    gold, with which of search and objective fell short under the search's order and under a
    fresh one. `review_cost` is what all of it took."""
    t0 = time.perf_counter()
    with metered() as used:
        out: dict = {"zero_shot_true": zero_shot_true(search.model, data)}
        fresh = search.reordered(search.cfg.orders)  # an order the search never scored
        rng = np.random.default_rng([*seed, 2**32 - 1])
        out["concept"] = concept_test(fresh, search.structure, labels, rng, scored_so_far)
        out |= gold_review(search, fresh, data, labels)
    cost = {"calls": used.calls, "tokens": used.tokens, "cached_tokens": used.cached_tokens}
    return out | {"review_cost": cost | {"seconds": round(time.perf_counter() - t0, 3)}}


def gold_review(search: Search, fresh: Objective, data: Dataset, labels: list[int]) -> dict:
    """U of the gold labelling beside U of the labels found, under the order the search
    optimised and under `fresh`, with the verdict of each (all None without complete gold)."""
    out: dict = {"gold_utility": None, "diagnosis": None, "fresh_order": None}
    if not data.gold or any(g is None for g in data.gold):
        return out
    gold = [int(g) for g in data.gold]  # type: ignore[arg-type]
    same = labels == gold
    found, best = search.evaluate(labels).utility, search.evaluate(gold).utility
    out["gold_utility"], out["diagnosis"] = best, diagnose(found, best, same)
    found_f, gold_f = (ev.utility for ev in fresh.evaluate_all([labels, gold]))
    out["fresh_order"] = {
        "utility": found_f,
        "gold_utility": gold_f,
        "diagnosis": diagnose(found_f, gold_f, same),
    }
    return out


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
