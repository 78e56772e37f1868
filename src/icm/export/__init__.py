"""Exports of a run's ICM labels as training data: `export_run(run, fmt, out)`.

See `records` for the formats (TRL's column names) and `write` for the containers.
"""

from __future__ import annotations

from pathlib import Path

from .records import (
    FORMATS,
    Labelled,
    load_labelled,
    prompts,
    read_labelled,
    records,
    response_fields,
)
from .write import container, write


def export_run(
    run: str | Path,
    fmt: str,
    out: str | Path,
    searched_only: bool = False,
    overwrite: bool = False,
) -> tuple[int, Labelled]:
    """Write the `fmt` records of a run folder to `out`; returns (records written, labels)."""
    data = load_labelled(run, searched_only)
    rows = records(data, fmt)
    write(rows, out, overwrite)
    return len(rows), data


__all__ = [
    "FORMATS",
    "Labelled",
    "container",
    "export_run",
    "load_labelled",
    "prompts",
    "read_labelled",
    "records",
    "response_fields",
    "write",
]
