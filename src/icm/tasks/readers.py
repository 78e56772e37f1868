"""Rows from wherever a researcher keeps claims: JSON (a list of objects), JSON Lines, CSV, TSV,
Parquet, a Hugging Face `datasets` folder (`save_to_disk`), or `hf:NAME[:SPLIT]` from the local
Hugging Face cache. Nothing is downloaded.

Every reader gives each row as a dict of JSON values, with the number a message names: the line
of a text file, the position (from 1) in a table. Each is as strict as the JSON Lines reader: a
row that is not an object, a cell that is NaN or infinite, a value JSON has no type for (bytes,
a timestamp) and text that is not UTF-8 are one `DataError` line naming the file, the row and
the column. In CSV and TSV every cell is text and an empty cell is a missing value, as null is in
JSON (a claim field must not be missing; an empty label means no gold label).

`ReadOptions` pick a split, keep some columns, and let a task read a field from another column
(`--field choice=answer`), so a built-in task or a spec reads another schema.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import files
from ..errors import ConfigError, DataError, pip_hint
from ..options import option

HF = "hf:"
"""The prefix of a data set named in the local Hugging Face cache: `hf:NAME[:SPLIT]`."""
TEXT_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet"}
_SPLIT = re.compile(r"\w[\w.-]*")
"""A split's name as `datasets` writes one: no path separator, no leading dot."""


@dataclass
class ReadOptions:
    """How the data is read: which split, which columns, which column holds a task's field."""

    split: str | None = option(
        None,
        "the split of a `datasets` folder or an hf: data set (default: its only split, else "
        "'train')",
    )
    columns: str | None = option(
        None, "read only these columns (comma-separated); the others are dropped on reading"
    )
    field: list[str] = field(
        default_factory=list,
        metadata={
            "help": "FIELD=COLUMN: the task's FIELD read from COLUMN (repeat for several), e.g. "
            "--field choice=answer",
        },
    )

    def renames(self) -> dict[str, str]:
        """{column: field} from the --field options, checked."""
        out: dict[str, str] = {}
        for given in self.field:
            name, sep, column = given.partition("=")
            if not sep or not name.strip() or not column.strip():
                raise ConfigError(f"--field {given!r}: expected FIELD=COLUMN, e.g. choice=answer")
            if column.strip() in out:
                raise ConfigError(f"--field: column {column.strip()!r} is named twice")
            out[column.strip()] = name.strip()
        return out

    def kept(self) -> list[str] | None:
        if self.columns is None:
            return None
        names = [c.strip() for c in self.columns.split(",") if c.strip()]
        if not names:
            raise ConfigError("--columns: name at least one column")
        return names


def kind_of(source: str) -> str:
    """What reads `source`: json, jsonl, csv, tsv, parquet, datasets (a folder) or hf."""
    if source.startswith(HF):
        return "hf"
    path = Path(source)
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    return TEXT_SUFFIXES.get(suffix) or TABLE_SUFFIXES.get(suffix) or "json-or-jsonl"


def read_rows(source: str | Path, opts: ReadOptions | None = None) -> tuple[list[dict], list[int]]:
    """The rows of `source` and the number of each, every value checked (see the module)."""
    opts = opts or ReadOptions()
    source = str(source)
    kind = kind_of(source)
    if opts.split is not None and kind not in ("datasets", "hf"):
        raise ConfigError(f"--split is for a datasets folder or hf:NAME, not {source}")
    if kind in ("csv", "tsv"):
        rows, lines = _delimited(source, "," if kind == "csv" else "\t")
    elif kind in ("parquet", "datasets", "hf"):
        rows = _table(source, kind, opts.split)
        lines = list(range(1, len(rows) + 1))
    else:
        rows, lines = _json(source, kind)
    return _select(rows, lines, source, opts), lines


# -- JSON and JSON Lines ----------------------------------------------------------------------
def _json(source: str, kind: str) -> tuple[list[dict], list[int]]:
    text = files.read_text(source, "data file")
    if not text.strip():
        raise DataError(f"{source}: empty file")
    rows: list[Any]
    if kind == "jsonl" or (kind != "json" and not text.lstrip().startswith("[")):
        numbered = files.parse_jsonl(text, source, unit="row")
        rows, lines = [v for _, v in numbered], [n for n, _ in numbered]
    else:
        try:
            loaded = files.loads(text)
        except ValueError as e:
            raise DataError(f"{source}: invalid JSON: {e}") from e
        if not isinstance(loaded, list):
            raise DataError(f"{source}: expected a list of objects, got {json_type(loaded)}")
        rows, lines = loaded, list(range(1, len(loaded) + 1))
    for row, r in zip(rows, lines, strict=True):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {r}: expected an object, got {json_type(row)}")
    return rows, lines


# -- CSV and TSV ------------------------------------------------------------------------------
def _delimited(source: str, delimiter: str) -> tuple[list[dict], list[int]]:
    """Rows of a CSV or TSV file with a header; every cell text, an empty cell None."""
    text = files.read_text(source, "data file")
    if not text.strip():
        raise DataError(f"{source}: empty file")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        if len(set(header)) != len(header) or any(not h.strip() for h in header):
            raise DataError(
                f"{source}: line 1: the header names a column twice or leaves one blank"
            )
        rows, lines = [], []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(cells) != len(header):
                raise DataError(
                    f"{source}: line {reader.line_num}: {len(cells)} cells under a header of "
                    f"{len(header)} columns"
                )
            rows.append({h: (c if c != "" else None) for h, c in zip(header, cells, strict=True)})
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{source}: line {reader.line_num}: not valid CSV ({e})") from e
    if not rows:
        raise DataError(f"{source}: no rows under the header")
    return rows, lines


# -- Parquet, datasets folders and the Hugging Face cache -------------------------------------
def _table(source: str, kind: str, split: str | None) -> list[dict]:
    """Rows of a Parquet file, a `datasets` folder or a cached Hugging Face data set, every value
    a JSON value."""
    rows = _parquet(source) if kind == "parquet" else _dataset(source, kind, split)
    for r, row in enumerate(rows, start=1):
        for name, value in row.items():
            why = not_json(value)
            if why:
                raise DataError(f"{source}: row {r}: column {name!r}: {why}")
    return rows


def _parquet(source: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ConfigError(f"{source}: reading Parquet needs pyarrow: {pip_hint('pyarrow')}") from e
    files.read_bytes(source, "data file", limit=files.MAX_BYTES)  # a plain file, not too large
    try:
        return pq.read_table(source).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds; one line each
        raise DataError(f"{source}: not a readable Parquet file ({_first_line(e)})") from e


def _dataset(source: str, kind: str, split: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError as e:
        raise ConfigError(f"{source}: reading it needs datasets: {pip_hint('datasets')}") from e
    if kind == "datasets":
        marks = ("dataset_dict.json", "state.json", "dataset_info.json")
        if not any((Path(source) / m).is_file() for m in marks):
            raise DataError(
                f"{source}: is a folder, not a data file or a `datasets` folder (save_to_disk)"
            )
        _check_splits(source)
        try:
            loaded = datasets.load_from_disk(source)
        except Exception as e:  # noqa: BLE001 - a folder that is no saved data set
            raise DataError(
                f"{source}: is a folder but not a readable datasets folder ({_first_line(e)})"
            ) from e
    else:
        loaded = _cached(source, split)
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(source, loaded, split)
    return loaded.to_list()


def _cached(source: str, split: str | None) -> Any:
    """`hf:NAME[:SPLIT]` from the local cache alone (the hub is never asked)."""
    import datasets

    name, _, named_split = source[len(HF) :].partition(":")
    parts = name.split("/")
    if len(parts) > 2 or not all(re.fullmatch(r"\w[\w.-]*", p) for p in parts):
        raise ConfigError(f"{source}: expected hf:NAME or hf:NAME:SPLIT, e.g. hf:org/claims:train")
    if named_split and not _SPLIT.fullmatch(named_split):
        raise ConfigError(f"{source}: {named_split!r} is not a split name, e.g. hf:org/claims:test")
    if Path(name).exists():  # datasets would read a local folder of that name, not the cache
        raise ConfigError(f"{source}: {name} is a local path here: pass it as --data {name}")
    if named_split and split and named_split != split:
        raise ConfigError(f"{source}: names split {named_split!r} but --split is {split!r}")
    offline = {"HF_HUB_OFFLINE": True, "HF_DATASETS_OFFLINE": True}
    saved: dict[str, Any] = {k: getattr(datasets.config, k, None) for k in offline}
    verbosity = datasets.logging.get_verbosity()
    try:
        datasets.logging.set_verbosity_error()  # not "using the latest cached version" each time
        for k, v in offline.items():
            setattr(datasets.config, k, v)
        return datasets.load_dataset(name, split=named_split or split or None)
    except Exception as e:  # noqa: BLE001 - not cached, or no such split: one line
        reason = _first_line(e)
        if "split" in reason.lower():
            raise DataError(f"{source}: {reason}") from e
        raise DataError(
            f"{source}: not in the local Hugging Face cache ({reason}); icm downloads nothing: "
            f'fetch it once where there is a network (python -c "import datasets; '
            f"datasets.load_dataset('{name}')\"), or pass a file"
        ) from e
    finally:
        datasets.logging.set_verbosity(verbosity)
        for k, v in saved.items():
            setattr(datasets.config, k, v)


def _check_splits(source: str) -> None:
    """A folder's dataset_dict.json names its splits' subfolders: each must be a plain name, so
    that reading the folder never reads outside it."""
    index = Path(source) / "dataset_dict.json"
    if not index.is_file():
        return
    loaded = files.read_json(index, "datasets index")
    splits = loaded.get("splits") if isinstance(loaded, dict) else None
    if not isinstance(splits, list) or not all(
        isinstance(n, str) and _SPLIT.fullmatch(n) for n in splits
    ):
        raise DataError(f"{index}: field 'splits': expected a list of split names")


def _pick_split(source: str, loaded: Any, split: str | None) -> Any:
    names = list(loaded)
    if split is None:
        if len(names) == 1:
            return loaded[names[0]]
        if "train" in names:
            return loaded["train"]
        raise ConfigError(f"{source}: holds the splits {', '.join(names)}: pick one with --split")
    if split not in loaded:
        raise ConfigError(f"{source}: no split {split!r}; it holds {', '.join(names)}")
    return loaded[split]


def not_json(value: object) -> str | None:
    """Why a value read from a table is not a JSON value icm can take, or None."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a number icm reads"
    if isinstance(value, list):
        return next((w for w in map(not_json, value) if w), None)
    if isinstance(value, dict):
        return next((w for w in map(not_json, value.values()) if w), None)
    return f"holds a {type(value).__name__}, which icm does not read: cast the column to text"


# -- columns and field names -------------------------------------------------------------------
def _select(rows: list[dict], lines: list[int], source: str, opts: ReadOptions) -> list[dict]:
    """Only the columns asked for, with the renames applied; a column named but absent from a
    row is one line."""
    kept, renames = opts.kept(), opts.renames()
    if kept is None and not renames:
        return rows
    out = []
    for row, r in zip(rows, lines, strict=True):
        if kept is not None:
            missing = [c for c in kept if c not in row]
            if missing:
                raise DataError(f"{source}: row {r}: no column {missing[0]!r} (--columns)")
            row = {c: row[c] for c in kept}
        for column, name in renames.items():
            if column not in row:
                raise DataError(f"{source}: row {r}: no column {column!r} (--field {name}=...)")
            if name in row and name not in renames:
                raise DataError(
                    f"{source}: row {r}: has both {name!r} and {column!r}: --field {name}="
                    f"{column} would hide one"
                )
        out.append({renames.get(k, k): v for k, v in row.items()})
    return out


def json_type(v: object) -> str:
    """The JSON name of a value's type, for messages about data files."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "text"
    return "a list" if isinstance(v, list) else "an object" if isinstance(v, dict) else "?"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
