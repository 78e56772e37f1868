"""Exports of a run's ICM labels as training data: `export_run(run, fmt, out)`.

See `records` for the formats (TRL's column names) and `write` for the containers.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from ..run.folder import RunFolder, check_output, input_files
from ..run.labels import Labelled, labelled_rows, load_labelled, read_labelled
from . import matrix, tools  # noqa: F401 - register the label-matrix and review-tool formats
from .records import FORMATS, prompts, records, response_fields
from .write import container, is_export, write

REVIEWS = ("review", "label-studio", "argilla")
"""Formats for a person to label: the least certain rows first."""


def export_run(
    run: str | Path,
    fmt: str,
    out: str | Path,
    searched_only: bool = False,
    overwrite: bool = False,
    least_certain: int | None = None,
) -> tuple[int, Labelled]:
    """Write the `fmt` records of a run folder to `out`; returns (records written, labels).

    `out` may not be the run folder, one of its files or an input of the run; an existing
    output is replaced only with `overwrite` (a folder only when it is an export icm wrote)."""
    inputs = input_files(RunFolder(run).read_config())
    check_output(out, overwrite, ours=is_export(out), protected=inputs, run=run)
    if least_certain is not None and (fmt not in REVIEWS or least_certain < 1):
        raise ConfigError(
            "--least-certain K (K at least 1) goes with --format review, label-studio or argilla"
        )
    if fmt in ("label-studio", "argilla") and container(Path(out)) != "json":
        raise ConfigError(f"--format {fmt}: the tool imports a .json file: --out FILE.json")
    data = load_labelled(run, searched_only)
    rows = records(data, fmt, least_certain)
    if not rows:
        raise DataError(f"{run}: no rows to export (every row has a person's label)")
    write(rows, out)
    return len(rows), data


__all__ = [
    "FORMATS",
    "Labelled",
    "container",
    "labelled_rows",
    "export_run",
    "load_labelled",
    "prompts",
    "read_labelled",
    "records",
    "response_fields",
    "write",
]
