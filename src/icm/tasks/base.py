"""The declarative task type and row validation (the data readers: `readers.py`)."""

from __future__ import annotations

import string
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..core.consistency import RULES, get_rule
from ..core.data import Example, PromptFormat
from ..errors import DataError
from .readers import ReadOptions, json_type, read_rows

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
            g = ex.group_or(i)
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
    expand: Callable[[list[dict], list[int], str], tuple[list[dict], list[int]]] | None = None
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

    def load(self, source: str | Path, read: ReadOptions | None = None) -> Dataset:
        """The examples of a data file, a `datasets` folder or `hf:NAME` (see `readers`)."""
        rows, lines = read_rows(source, read)
        if self.expand is not None:
            rows, lines = self.expand(rows, lines, str(source))
        data = self.build(rows, str(source), lines)
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
        if not get_rule(self.rule).pair_key:
            return
        for i, ex in enumerate(data.examples):
            if ex.key is None:
                continue
            a, b = cast("tuple[Hashable, Hashable]", ex.key)
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

    def build(
        self, rows: list[dict], source: str = "<rows>", lines: list[int] | None = None
    ) -> Dataset:
        """Examples from rows; `lines[k]` is the row number that messages name (a JSONL line)."""
        if not rows:
            raise DataError(f"{source}: no rows")
        examples, gold = [], []
        kinds = GroupKinds(self.group, source)
        for k, row in enumerate(rows):
            r = lines[k] if lines else k + 1
            values = {f: self._field(row, f, source, r) for f in self.fields}
            prompt = self.template.format(**values)
            group = None
            if self.group:
                if self.group not in row:
                    raise DataError(f"{source}: row {r}: missing field {self.group!r} (the group)")
                group = kinds.check(row[self.group], r)
            try:
                key = self.key(row) if self.key else None
            except KeyError as e:
                raise DataError(
                    f"{source}: row {r}: missing field {e.args[0]!r} (the consistency key)"
                ) from e
            except ValueError as e:
                raise DataError(f"{source}: row {r}: the consistency key: {e}") from e
            uid = str(row.get("id", k))
            examples.append(Example(uid, prompt, group, key))
            gold.append(parse_label(row.get(self.label), source, r, self.label))
        return Dataset(examples, gold, rows, source, lines)

    def _alias(self, row: dict, name: str) -> str:
        """The name under which `row` holds field `name` (itself or an alias)."""
        return next((a for a in (name, *self.aliases.get(name, ())) if a in row), name)

    def _field(self, row: dict, name: str, source: str, r: int) -> str:
        for alias in (name, *self.aliases.get(name, ())):
            if alias in row:
                v = row[alias]
                if not isinstance(v, str):  # a number is not a claim: NaN, 1e999, 5000 digits
                    raise DataError(
                        f"{source}: row {r}: field {alias!r} must be text, got {json_type(v)}"
                    )
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
                    raise DataError(
                        f"{source}: row {r}: field {alias!r} holds an invalid character "
                        f"(an unpaired surrogate at position {e.start})"
                    ) from e
                return v
        names = " or ".join(repr(a) for a in (name, *self.aliases.get(name, ())))
        raise DataError(f"{source}: row {r}: missing field {names}")


class GroupKinds:
    """Group ids keep their type: all text or all integers in one file.

    Python counts 1, 1.0 and true as one dictionary key, so a file that mixes them would merge
    groups silently; such a file is refused instead, as are booleans, fractions and NaN."""

    def __init__(self, name: str | None, source: str) -> None:
        self.name, self.source = name, source
        self.first: tuple[str, int] | None = None

    def check(self, v: object, r: int) -> Hashable | None:
        if v is None:
            return None  # no group: the row is a group of its own
        if isinstance(v, str):
            kind = "text"
        elif isinstance(v, int) and not isinstance(v, bool):
            kind = "an integer"
        else:
            raise DataError(
                f"{self.source}: row {r}: field {self.name!r} (the group) must be text or an "
                f"integer, got {json_type(v)}: {_short(v)}"
            )
        if self.first is None:
            self.first = (kind, r)
        elif self.first[0] != kind:
            raise DataError(
                f"{self.source}: row {r}: field {self.name!r} (the group) is {kind}, but row "
                f"{self.first[1]}'s is {self.first[0]}: group ids must all have one type"
            )
        return v


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


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
    raise DataError(f"{source}: row {r}: field {name!r} must be a binary label, got {_short(v)}")


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


def agreement(labels: Sequence[int], gold: Sequence[int | None]) -> float | None:
    """Fraction of labelled examples with gold whose ICM label matches it (reporting only)."""
    pairs = [(y, g) for y, g in zip(labels, gold, strict=True) if y >= 0 and g is not None]
    return sum(y == g for y, g in pairs) / len(pairs) if pairs else None
