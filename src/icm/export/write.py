"""Writing records: JSONL, JSON, CSV, Parquet, or a Hugging Face `datasets` folder, atomically.

The container follows the output path: `.jsonl`, `.json`, `.csv` and `.parquet` are files; any
other path is a folder written with `datasets.Dataset.save_to_disk` (read back with
`datasets.load_from_disk`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from .. import files
from ..errors import IcmError
from ..files import neutral

CONTAINERS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def container(out: str | Path) -> str:
    return CONTAINERS.get(Path(out).suffix.lower(), "hf")


EXPORT_MARKER = ".icm-export"
"""Inside a datasets folder icm wrote: only such a folder may be replaced."""


def is_export(out: str | Path) -> bool:
    return (Path(out) / EXPORT_MARKER).is_file()


def write(records: list[dict], out: str | Path) -> str:
    """Write `records` to `out` (checked by the caller); returns the container used. An existing
    output is replaced only once the new one is complete."""
    out = Path(out)
    kind = container(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        files.write_jsonl(out, records)
    elif kind == "json":
        files.write_json(out, records)
    elif kind == "csv":
        files.write_text(out, to_csv(records))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _arrow(lambda: pa.Table.from_pylist(records), out)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        files.write_bytes(out, sink.getvalue().to_pybytes())
    else:
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        ds = _arrow(lambda: Dataset.from_list(records), out)
        tmp = temp_dir(out)
        try:
            ds.save_to_disk(str(tmp))
            (tmp / EXPORT_MARKER).write_text("written by icm export\n")
            replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return kind


def to_csv(records: list[dict]) -> str:
    """One row per record, a column per key (in first-seen order); lists and objects as JSON,
    text that would start a formula neutralised (`neutral`)."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(
            {k: neutral(json.dumps(v) if isinstance(v, list | dict) else v) for k, v in r.items()}
        )
    return buf.getvalue()


def temp_dir(out: Path) -> Path:
    """An empty folder beside `out` to build it in, with the usual permissions (not 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o777 & ~files.umask())
    return tmp


def replace_dir(new: Path, out: Path) -> None:
    """Move the complete folder `new` to `out`; an old `out` is removed only after the move.

    Its files get the usual permissions first: some writers (safetensors) leave them 0600, which
    would keep a model from the other users of a shared machine."""
    mode = 0o666 & ~files.umask()
    for f in new.rglob("*"):
        if f.is_file():
            f.chmod(mode)
    old = None
    files.refuse_special(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


def _arrow(build, out: Path):
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for mixed columns
        raise IcmError(
            f"{out}: the records do not fit one table ({str(e).splitlines()[0]}); "
            "write .jsonl instead"
        ) from e
