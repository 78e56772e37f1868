"""The declarative task type, the data-file readers and row validation."""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.consistency import RULES
from ..core.data import Example, PromptFormat
from ..errors import DataError

KeyFn = Callable[[dict], Hashable | None]


@dataclass
class Dataset:
    """Examples for the search, plus what only reporting may read: gold labels and the raw rows."""

    examples: list[Example]
    gold: list[int | None]
    rows: list[dict]
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, idx: list[int]) -> Dataset:
        return Dataset(
            [self.examples[i] for i in idx],
            [self.gold[i] for i in idx],
            [self.rows[i] for i in idx],
            self.source,
        )

    def first_groups(self, limit: int) -> Dataset:
        """Whole groups, the first in file order, while they fit in `limit` rows (at least one)."""
        order: list[Hashable] = []
        members: dict[Hashable, list[int]] = {}
        for i, ex in enumerate(self.examples):
            g = ex.group if ex.group is not None else ("row", i)
            if g not in members:
                order.append(g)
                members[g] = []
            members[g].append(i)
        idx: list[int] = []
        for g in order:
            if idx and len(idx) + len(members[g]) > limit:
                break
            idx += members[g]
        return self.subset(sorted(idx))


@dataclass
class Task:
    """A claim-labelling task.

    template: a `str.format` template over row fields, ending where the label word goes.
    aliases:  accepted alternative names per field (e.g. the claim as `choice` or `cot`).
    key:      the consistency key of a row (None: no key), computed from claim text, never gold.
    """

    name: str
    template: str
    rule: str = "none"
    group: str | None = "consistency_id"
    label: str = "label"
    key: KeyFn | None = None
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fmt: PromptFormat = field(default_factory=PromptFormat)
    expand: Callable[[list[dict], str], list[dict]] | None = None
    """Turns rows of another layout into claim rows (e.g. one row with four solutions)."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise DataError(f"task {self.name}: unknown consistency rule {self.rule!r}")

    @property
    def fields(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]

    def load(self, path: str | Path) -> Dataset:
        path = Path(path)
        rows = read_rows(path)
        if self.expand is not None:
            rows = self.expand(rows, str(path))
        return self.build(rows, str(path))

    def build(self, rows: list[dict], source: str = "<rows>") -> Dataset:
        if not rows:
            raise DataError(f"{source}: no rows")
        examples, gold = [], []
        for r, row in enumerate(rows, start=1):
            values = {}
            for f in self.fields:
                values[f] = self._field(row, f, source, r)
            prompt = self.template.format(**values)
            group = row.get(self.group) if self.group else None
            if self.group and self.group not in row:
                raise DataError(f"{source}: row {r}: missing field {self.group!r} (the group)")
            if isinstance(group, list | dict):
                raise DataError(
                    f"{source}: row {r}: field {self.group!r} must be a string or number"
                )
            key = self.key(row) if self.key else None
            uid = str(row.get("id", r - 1))
            examples.append(Example(uid, prompt, group, key))
            gold.append(parse_label(row.get(self.label), source, r, self.label))
        return Dataset(examples, gold, rows, source)

    def _field(self, row: dict, name: str, source: str, r: int) -> str:
        for alias in (name, *self.aliases.get(name, ())):
            if alias in row:
                v = row[alias]
                if isinstance(v, str | int | float) and not isinstance(v, bool):
                    return str(v)
                raise DataError(
                    f"{source}: row {r}: field {alias!r} must be text, got {type(v).__name__}"
                )
        names = " or ".join(repr(a) for a in (name, *self.aliases.get(name, ())))
        raise DataError(f"{source}: row {r}: missing field {names}")


def parse_label(v: object, source: str, r: int, name: str) -> int | None:
    """Gold labels as bool, 0/1 or missing; anything else is an error."""
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float) and v in (0, 1):
        return int(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "0", "1"):
        return int(v.strip().lower() in ("true", "1"))
    raise DataError(f"{source}: row {r}: field {name!r} must be a binary label, got {v!r}")


def read_rows(path: Path) -> list[dict]:
    """A JSON list of objects or JSONL, as a list of dicts; bad files raise one-line DataErrors."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a JSON or JSONL file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from e
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if path.suffix == ".jsonl" or (not text.lstrip().startswith("[") and path.suffix != ".json"):
        rows = list(_jsonl(path, text))
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a list of objects, got {type(rows).__name__}")
    for r, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {r}: expected an object, got {type(row).__name__}")
    return rows


def _jsonl(path: Path, text: str) -> Iterator[dict]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: row {n}: invalid JSON: {e.msg}") from e


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(task_names())}")
    return _TASKS[name]


def task_names() -> list[str]:
    return sorted(_TASKS)
