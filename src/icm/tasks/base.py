"""The declarative task type, the data-file readers and row validation."""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Hashable, Iterator, Sequence
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
    lines: list[int] | None = None
    """The row number of each example in `source` (None: its position), for error messages."""

    def __len__(self) -> int:
        return len(self.examples)

    def line(self, i: int) -> int:
        return self.lines[i] if self.lines else i + 1

    def subset(self, idx: list[int]) -> Dataset:
        return Dataset(
            [self.examples[i] for i in idx],
            [self.gold[i] for i in idx],
            [self.rows[i] for i in idx],
            self.source,
            [self.line(i) for i in idx],
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
    unique: bool = True
    """Two rows of a group may not make the same prompt (a duplicated row is a mistake)."""
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
        data = self.build(rows, str(path))
        self.check_pairs(data)
        return data

    def check_pairs(self, data: Dataset) -> None:
        """Rows that would mislead the search: a duplicated row, or a comparison whose reverse
        (the same pair in the other order) is missing from its group."""
        seen: dict[tuple, int] = {}
        keys: dict[Hashable, set] = {}
        for i, ex in enumerate(data.examples):
            first = seen.setdefault((ex.group, ex.prompt), i)
            if self.unique and first != i:
                raise DataError(
                    f"{data.source}: row {data.line(i)}: duplicate of row {data.line(first)} "
                    f"(same prompt in group {ex.group!r})"
                )
            keys.setdefault(ex.group, set()).add(ex.key)
        if self.rule != "asymmetry":
            return
        for i, ex in enumerate(data.examples):
            if ex.key is None:
                continue
            a, b = ex.key  # type: ignore[misc]
            if (b, a) not in keys[ex.group]:
                raise DataError(
                    f"{data.source}: row {data.line(i)}: the comparison has no reverse in group "
                    f"{ex.group!r} (a row with {self.key_fields[0]!r} and {self.key_fields[1]!r} "
                    "swapped): comparisons need both orders"
                )

    @property
    def key_fields(self) -> list[str]:
        return getattr(self.key, "fields", None) or ["choice", "choice_2"]

    def check_lengths(self, data: Dataset, counts: Sequence[int], context: int) -> None:
        """Every example (`counts[i]` tokens) must fit the model's context on its own, or no
        batch can hold it."""
        for i, tokens in enumerate(counts):
            n = tokens + 1
            if n > context:
                row = data.rows[i]
                name = max(
                    (self._alias(row, f) for f in self.fields), key=lambda f: len(str(row[f]))
                )
                raise DataError(
                    f"{data.source}: row {data.line(i)}: field {name!r}: the "
                    f"example needs {n} tokens but the model's context is {context}: shorten "
                    "it, drop the row, or use a model with a longer context"
                )

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
            try:
                key = self.key(row) if self.key else None
            except KeyError as e:
                raise DataError(
                    f"{source}: row {r}: missing field {e.args[0]!r} (the consistency key)"
                ) from e
            uid = str(row.get("id", r - 1))
            examples.append(Example(uid, prompt, group, key))
            gold.append(parse_label(row.get(self.label), source, r, self.label))
        return Dataset(examples, gold, rows, source)

    def _alias(self, row: dict, name: str) -> str:
        """The name under which `row` holds field `name` (itself or an alias)."""
        return next((a for a in (name, *self.aliases.get(name, ())) if a in row), name)

    def _field(self, row: dict, name: str, source: str, r: int) -> str:
        for alias in (name, *self.aliases.get(name, ())):
            if alias in row:
                v = row[alias]
                if not isinstance(v, str | int | float) or isinstance(v, bool):
                    raise DataError(
                        f"{source}: row {r}: field {alias!r} must be text, got {json_type(v)}"
                    )
                text = str(v)
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
                    raise DataError(
                        f"{source}: row {r}: field {alias!r} holds an invalid character "
                        f"(an unpaired surrogate at position {e.start})"
                    ) from e
                return text
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


def json_type(v: object) -> str:
    """The JSON name of a value's type, for messages about JSON files."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "text"
    return "a list" if isinstance(v, list) else "an object" if isinstance(v, dict) else "?"


def read_rows(path: Path) -> list[dict]:
    """A JSON list of objects or JSONL, as a list of dicts; bad files raise one-line DataErrors."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a JSON or JSONL file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e
    try:
        text = raw.decode("utf-8-sig")  # -sig: a leading byte-order mark is fine
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {e.start})") from e
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if path.suffix == ".jsonl" or (not text.lstrip().startswith("[") and path.suffix != ".json"):
        rows = list(_jsonl(path, text))
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        except RecursionError as e:
            raise DataError(f"{path}: invalid JSON: nested too deeply") from e
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a list of objects, got {json_type(rows)}")
    for r, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {r}: expected an object, got {json_type(row)}")
    return rows


def _jsonl(path: Path, text: str) -> Iterator[dict]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: row {n}: invalid JSON: {e.msg}") from e
        except RecursionError as e:
            raise DataError(f"{path}: row {n}: invalid JSON: nested too deeply") from e


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
