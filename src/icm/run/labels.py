"""A run's labelled rows as the rest of icm reads them (export, training, iterative ICM)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, RunError
from ..files import read_jsonl
from ..tasks import Task, resolve_task
from .folder import LABELS, RunFolder, fingerprint

ICM_FIELDS = (
    "icm_label",
    "icm_logodds",
    "icm_searched",
    "icm_confidence",
    "icm_batch",
    "icm_fixed",
)


@dataclass
class Labelled:
    """A run's claims with their ICM labels; `rows` have the gold field removed."""

    task: Task
    rows: list[dict]
    labels: list[bool]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    """Why some pairs were left out (reported, not fatal)."""
    rows_in_file: list[int] = field(default_factory=list)
    """Each row's position in the labels file (0-based)."""
    confidence: list[float | None] = field(default_factory=list)
    fixed: list[bool] = field(default_factory=list)
    folder: Path | None = None
    """The run folder the rows came from (None: a labels file read on its own)."""


def load_labelled(folder: str | Path, searched_only: bool = False) -> Labelled:
    """labels.jsonl of a run folder, with its task from config.json."""
    run = RunFolder(folder)
    cfg = run.read_config()
    raw = read_labels(run)
    out = labelled_rows(raw, resolve_task(cfg.task), str(run.path / LABELS), searched_only)
    out.folder = run.path
    return out


def read_labels(run: RunFolder) -> list[dict]:
    """The rows of a run's labels.jsonl: the rows the plan fingerprinted, each ICM field of the
    type icm wrote (an edited file is one line naming the row and the field)."""
    path = run.path / LABELS
    if not path.exists():
        raise RunError(f"{run.path}: no {LABELS} yet: let the run finish (or --resume it)")
    raw = read_jsonl(path)
    plan = run.read_plan()
    if plan is not None:
        rows = [{k: v for k, v in r.items() if k not in ICM_FIELDS} for r in raw]
        if len(rows) != plan.data.get("rows") or fingerprint(rows) != plan.data.get("rows_hash"):
            raise RunError(
                f"{path}: its rows are not the rows the run labelled (plan.json has their "
                "fingerprint): edited or copied from another run?"
            )
    for r, row in enumerate(raw, start=1):
        check_icm_fields(row, str(path), r)
    return raw


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "icm_label": (lambda v: isinstance(v, bool), "true or false"),
    "icm_searched": (lambda v: isinstance(v, bool), "true or false"),
    "icm_fixed": (lambda v: isinstance(v, bool), "true or false"),
    "icm_logodds": (_number, "a number"),
    "icm_confidence": (lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "icm_batch": (lambda v: _number(v) and isinstance(v, int) and v >= 0, "a batch number"),
}
"""What each ICM field of labels.jsonl holds, as icm writes it; icm_label is in every row, the
others are checked where they are."""


def check_icm_fields(row: dict, source: str, r: int) -> None:
    """One line naming the row and the field, for an ICM field of a type icm never writes."""
    for name, (ok, want) in FIELD_CHECKS.items():
        if (name in row or name == "icm_label") and not ok(row.get(name)):
            raise DataError(
                f"{source}: row {r}: field {name!r} must be {want}, got {row.get(name)!r:.80}"
            )


def read_labelled(path: str | Path, task: Task, searched_only: bool = False) -> Labelled:
    """A labels.jsonl file read for `task`; every row is checked against the task first, so an
    error names the row of the file."""
    return labelled_rows(read_jsonl(path), task, str(path), searched_only)


def labelled_rows(
    raw: list[dict], task: Task, source: str, searched_only: bool = False
) -> Labelled:
    """Rows with their `icm_label` (as labels.jsonl holds them) as training material."""
    if raw:
        task.build([{k: v for k, v in row.items() if k != task.label} for row in raw], source)
    out = Labelled(task, [], [], source)
    for r, row in enumerate(raw, start=1):
        check_icm_fields(row, source, r)
        y = row["icm_label"]
        if searched_only and not row.get("icm_searched", True):
            continue
        conf = row.get("icm_confidence")
        out.rows.append({k: v for k, v in row.items() if k != task.label and k not in ICM_FIELDS})
        out.labels.append(y)
        out.rows_in_file.append(r - 1)
        out.confidence.append(float(conf) if isinstance(conf, int | float) else None)
        out.fixed.append(row.get("icm_fixed") is True)
    if not out.rows:
        raise DataError(f"{source}: no labelled rows" + (" searched" if searched_only else ""))
    return out
