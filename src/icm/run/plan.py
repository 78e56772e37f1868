"""What a run searches: its data, the fixed labels a person gave, and the batch plan."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import files
from ..backends import make_model
from ..core.consistency import constraints, violations
from ..core.model import LabelModel, token_costs, token_counts
from ..errors import ConfigError, DataError
from ..options import options_of
from ..tasks import Dataset, Task, resolve_task
from ..tasks.base import parse_label
from ..tasks.readers import ReadOptions, read_rows
from .config import RunConfig
from .folder import (
    Plan,
    batch_fingerprints,
    data_fingerprints,
    settings_fingerprint,
)
from .reviews import as_fixed_rows


def load_data(cfg: RunConfig) -> tuple[Task, Dataset]:
    task = resolve_task(cfg.task)
    if not cfg.data:
        raise ConfigError("no data file: pass --data FILE")
    data = task.load(cfg.data, options_of(ReadOptions, cfg))
    if cfg.limit is not None:
        data = data.first_groups(cfg.limit)
    if len(data) < 2:
        raise DataError(f"{cfg.data}: ICM needs at least 2 examples, got {len(data)}")
    return task, data


def model_identity(model: LabelModel) -> dict:
    """What the backend says about the weights it scores with (a resume must find the same)."""
    return model.fingerprint()


def split(data: Dataset, cfg: RunConfig, model: LabelModel) -> list[list[int]]:
    """Cut the data into batches of whole groups, in file order, by rows and by prompt tokens.

    A batch's prompts hold all its other labelled examples, so a batch must fit the context:
    `--context-tokens` (default: the model's context, when the backend knows it) bounds the sum
    of its demonstrations' tokens, `--batch-size` its rows. A batch of one row would be searched
    with no demonstration at all: it joins its neighbour when the two fit together.
    """
    limit_rows = cfg.batch_size or len(data)
    budget = cfg.context_tokens or model.max_context
    costs = [0] * len(data)
    if budget:
        prompts = [ex.prompt for ex in data.examples]
        costs = [n + 3 for n in token_costs(model, prompts)]
    # Every prompt is the batch's other demonstrations plus one query: keep room for the longest.
    room = budget - max(costs) if budget else math.inf
    groups: dict[object, list[int]] = {}
    for i, ex in enumerate(data.examples):
        groups.setdefault(ex.group_or(i), []).append(i)
    order = list(groups.values())
    if cfg.shuffle_groups:  # the official code's batch: groups drawn at random
        order = [order[k] for k in np.random.default_rng([cfg.seed, 1]).permutation(len(order))]
    parts: list[list[int]] = [[]]
    used = 0
    for members in order:
        cost = sum(costs[i] for i in members)
        if budget and cost > budget:  # its own prompts would not fit: nothing to search with
            why = "--context-tokens" if cfg.context_tokens else "the model's context"
            raise ConfigError(
                f"{why} ({budget} tokens) cannot hold one group: rows "
                f"{', '.join(str(data.line(i)) for i in members[:4])} of {data.source} need "
                f"{cost} tokens together (a batch holds whole groups)"
            )
        if parts[-1] and (len(parts[-1]) + len(members) > limit_rows or used + cost > room):
            parts.append([])
            used = 0
        parts[-1].extend(members)
        used += cost
    for k in [k for k, p in enumerate(parts) if len(p) == 1 and len(parts) > 1][::-1]:
        other = k - 1 if k else k + 1
        if sum(costs[i] for i in parts[other] + parts[k]) <= (budget or math.inf):
            parts[min(k, other)] = parts[k] + parts[other]
            del parts[max(k, other)]
    return [sorted(p) for p in parts]  # each batch in file order


def make_plan(
    data: Dataset, task: Task, cfg: RunConfig, model: LabelModel, fixed: dict[int, int]
) -> Plan:
    batches = split(data, cfg, model)
    return Plan(
        batches,
        data_fingerprints(data, task.fmt, task.rule, fixed),
        model_identity(model),
        settings_fingerprint(cfg),
        batch_fingerprints(data, batches),
    )


def read_fixed(path: str | None, task: Task, data: Dataset) -> dict[int, int]:
    """Labels a person gave, by row of `data`: a CSV or JSONL file whose rows hold the task's
    fields (to find the claim), the group when claims repeat, and `human_label` (blank: none).

    Only this file's labels are used: gold labels in the data file are never read."""
    if not path:
        return {}
    rows, lines = _fixed_rows(path)
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
        if fixed.get(hits[0], y) != y:
            raise DataError(f"{path}: row {r}: gives another label to a claim an earlier row fixed")
        fixed[hits[0]] = y
    if not fixed:
        raise DataError(f"{path}: field 'human_label' is empty in every row: it fixes no label")
    _check_rule(path, task, data, fixed)
    return fixed


def _fixed_rows(path: str) -> tuple[list[dict], list[int]]:
    """The rows of a fixed-labels file (CSV: text as icm wrote it, see `files.restore`); one that
    has no `human_label` column is refused (the data file itself, say)."""
    if Path(path).suffix.lower() == ".csv":
        text = files.read_text(path, "fixed-labels file")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [
            {k: files.restore(v) if isinstance(v, str) else v for k, v in row.items()}
            for row in reader
        ]
        lines = list(range(1, len(rows) + 1))
    else:
        rows, lines = read_rows(Path(path))
        rows = as_fixed_rows(rows, path)  # a Label Studio or Argilla export, answered
    if not any(isinstance(row, dict) and "human_label" in row for row in rows):
        raise DataError(f"{path}: no field 'human_label': not a file of labels a person gave")
    return rows, lines


def _check_rule(path: str, task: Task, data: Dataset, fixed: dict[int, int]) -> None:
    """Fixed labels that break the consistency rule between themselves are refused: the search
    could never obey both them and the rule."""
    labels = [fixed.get(i, -1) for i in range(len(data))]
    broken = violations(constraints(task.rule, data.examples), labels)
    if broken:
        c = broken[0]
        raise DataError(
            f"{path}: the labels fixed for rows {data.line(c.i)} and {data.line(c.j)} of "
            f"{data.source} break the consistency rule {task.rule!r}"
        )


@dataclass
class Prepared:
    """A run's inputs, read and checked once, before anything is written."""

    task: Task
    data: Dataset
    model: LabelModel
    fixed: dict[int, int]
    """Labels a person gave (`--fixed-labels`), by row."""
    plan: Plan
    """The plan these inputs make; a resume checks the saved one against it."""


def prepare(cfg: RunConfig, model: LabelModel | None = None) -> Prepared:
    """Check the options, read the data and the fixed labels, build the model (unless given),
    check every prompt against its context and cut the batches: every input error is raised
    here, before a run folder is created or touched."""
    cfg.check()
    task, data = load_data(cfg)
    model = model or make_model(cfg, task.fmt)
    check_context(cfg, model, task, data)
    fixed = read_fixed(cfg.fixed_labels, task, data)
    plan = make_plan(data, task, cfg, model, fixed)
    if cfg.iterative_finetune and len(plan.batches) < 2:
        raise ConfigError(
            f"--iterative-finetune needs at least two batches, and the {len(data)} rows fit "
            "one: set --batch-size"
        )
    return Prepared(task, data, model, fixed, plan)


def check_context(cfg: RunConfig, model: LabelModel, task: Task, data: Dataset) -> None:
    """--context-tokens within the model's context, and every prompt (with the format's prefix
    and a separator) within both."""
    context = model.max_context
    budget = cfg.context_tokens or context
    if not budget:
        return
    counts = token_counts(model, [ex.prompt for ex in data.examples])
    if counts:
        extra = token_counts(model, [task.fmt.prefix + task.fmt.separator]) or [0]
        counts = [n + extra[0] for n in counts]
    if counts and cfg.context_tokens and max(counts) + 1 > cfg.context_tokens:
        i = max(range(len(counts)), key=counts.__getitem__)
        raise ConfigError(
            f"--context-tokens {cfg.context_tokens} cannot hold even one prompt: row "
            f"{data.line(i)} of {data.source} needs {counts[i] + 1} tokens with the format's prefix"
        )
    if not context:
        return
    if cfg.context_tokens and cfg.context_tokens > context:
        window = model.window
        why = f"the sliding window of {window} tokens" if window == context else "the context"
        raise ConfigError(
            f"--context-tokens {cfg.context_tokens} exceeds {why} of {cfg.model} ({context})"
            + (": pass --scorer naive to score longer prompts exactly" if window else "")
        )
    if counts:
        task.check_lengths(data, counts, context)
