"""Files in and out: strict readers and atomic writers.

Readers refuse what is not a plain file (a FIFO would hang, /dev/zero never ends), refuse files
too large to hold in memory, split JSON Lines on "\\n" only (U+2028 and U+0085 are legal inside a
JSON string), and refuse the non-JSON constants NaN and Infinity and an object that names a key
twice (parsers disagree on which value wins). Every problem is one
`DataError` line naming the file and the line.

Writers replace a file atomically (a reader sees the old file or the new one, never half of one)
and never write bare NaN, so every JSON file icm writes parses with a strict parser.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError, LinkError

TRAINED_META = "icm_train.json"
"""Written into every folder icm trains (a model, a reward model, a policy): what it was trained
from and how; a folder holding it is one icm may --overwrite."""

MAX_BYTES = 1 << 30
"""The largest file icm reads (1 GiB): data sets are held in memory, and ICM labels thousands of
claims, not millions."""


# -- reading -----------------------------------------------------------------------------------
def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return out


def loads(text: str) -> object:
    """json.loads without NaN, Infinity or a key named twice in one object; any failure is a
    ValueError with a short reason."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {e.lineno}: {e.msg}") from e
    except RecursionError as e:
        raise ValueError("nested too deeply") from e
    except ValueError as e:
        if "digits" in str(e):  # Python refuses to convert integers of over 4300 digits
            raise ValueError("a number with too many digits") from e
        raise


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file, or one DataError line saying why not."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} not found") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what}: {e.strerror}") from e
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a pipe or a device?), expected a {what}")
    if st.st_size > limit:
        raise DataError(
            f"{path}: {st.st_size / 2**30:.1f} GiB is more than icm reads ({limit >> 20} MiB)"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what}: {e.strerror}") from e
    if len(data) > limit:  # grew since stat
        raise DataError(f"{path}: more than icm reads ({limit >> 20} MiB)")
    return data


def read_text(path: str | Path, what: str = "file") -> str:
    """UTF-8 text of a regular file (a leading byte-order mark is fine)."""
    raw = read_bytes(path, what)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {e.start})") from e


def read_json(path: str | Path, what: str = "file") -> object:
    text = read_text(path, what)
    try:
        return loads(text)
    except ValueError as e:
        raise DataError(f"{path}: invalid JSON: {e}") from e


def parse_jsonl(
    text: str, source: str, torn_tail: bool = False, unit: str = "line"
) -> list[tuple[int, object]]:
    """(line number, value) of every non-blank line, split on "\\n" only. A bad line is an error
    naming `source` and the line (called `unit`), except, with `torn_tail`, a last line without
    its newline: what a killed appender leaves behind."""
    lines = text.split("\n")
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((n, loads(line.removesuffix("\r"))))
        except ValueError as e:
            if torn_tail and n == len(lines):  # no newline after it: cut short by a kill
                break
            raise DataError(f"{source}: {unit} {n}: invalid JSON: {e}") from e
    return out


def read_jsonl(path: str | Path, torn_tail: bool = False) -> list[dict]:
    """Objects of a JSON Lines file icm wrote; `torn_tail` for append-only files (the trace)."""
    rows = []
    for n, row in parse_jsonl(read_text(path), str(path), torn_tail):
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {n}: expected an object")
        rows.append(row)
    return rows


# -- writing -----------------------------------------------------------------------------------
def dumps(obj: object, indent: int | None = None) -> str:
    """Strict JSON: NaN or Infinity anywhere is a bug, never written."""
    return json.dumps(obj, indent=indent, allow_nan=False)


TEMP_MARK = ".icm-"
"""In the name of every temporary file icm writes, between the target's name and the random part."""


def umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(e: OSError, path: Path) -> OSError:
    """The error with the file it is about (a full disk names none)."""
    return e if e.filename else OSError(e.errno, e.strerror, str(path))


def write_bytes(path: str | Path, data: bytes) -> None:
    """`data` into `path` atomically (a temporary file, then a rename); a link at `path` is
    refused, neither replaced nor written through."""
    path = Path(path)
    refuse_replacing(path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp"
        )
    except OSError as e:  # named by the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        os.fchmod(fd, 0o666 & ~umask())  # what open() would give, not mkstemp's private 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def refuse_replacing(path: Path) -> None:
    """What icm never writes over: a link (it did not make) and a special file."""
    if path.is_symlink():
        raise LinkError(f"{path}: is a link icm did not make; icm never writes through one")
    refuse_special(path)


def plain_name(name: object) -> bool:
    """Whether `name`, read from a file icm wrote, names a file in a folder and nothing else:
    never the folder itself, its parent or a path."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and Path(name).name == name
        and "\\" not in name
    )


def refuse_special(path: Path) -> None:
    """A device, a pipe or a socket is never replaced (as root, a rename over /dev/null would
    succeed)."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise DataError(f"{path}: is a device, a pipe or a socket; icm never replaces one")


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(dumps(r) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """One whole line per call, flushed; a reader drops a torn last line (`torn_tail`)."""
    line = dumps(row) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link where icm appends: never written through
            raise LinkError(
                f"{path}: is a link icm did not make; icm never writes through one"
            ) from e
        raise _named(e, Path(path)) from e
    try:
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _named(e, Path(path)) from e


def is_temp(path: Path) -> bool:
    """Whether `path` is the temporary file of an atomic write of icm's (`.NAME.icm-XXXX.tmp`):
    the only files `sweep` removes, never a user's own `*.tmp`."""
    name = path.name
    return name.startswith(".") and name.endswith(".tmp") and TEMP_MARK in name


def sweep(folder: str | Path) -> int:
    """Remove the temporary files of writes a kill cut short (under `folder`, not following
    links); how many."""
    stale = []
    for root, _, names in os.walk(folder):  # os.walk does not enter linked folders
        for name in names:
            p = Path(root) / name
            if is_temp(p) and not p.is_symlink() and p.is_file():
                stale.append(p)
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def neutral(value: object) -> object:
    """A text cell a spreadsheet shows as text: one that starts like a formula gets a leading
    single quote, as OWASP advises. A cell that already starts with a quote before such a
    character (or another quote) gets one too, so `restore` undoes exactly this."""
    if isinstance(value, str) and (
        value.startswith(FORMULA_START)
        or (value.startswith("'") and value[1:2] in (*FORMULA_START, "'"))
    ):
        return "'" + value
    return value


def restore(value: str) -> str:
    """The text `neutral` was given (for CSV files icm wrote and a person filled in)."""
    if value.startswith("'") and value[1:2] in (*FORMULA_START, "'"):
        return value[1:]
    return value
