"""Custom tasks from a small YAML or JSON spec.

name: sentiment
template: "Review: {text}\\nClaim: the review is positive.\\nI think this claim is"
group: product_id          # optional: the field that groups claims
label: gold                # optional: the gold-label field, for agreement only
consistency:               # optional, default none
  rule: equivalence        # none | same-answer | equivalence | asymmetry
  key: topic               # one field, or two fields for asymmetry: [a, b]
label_words: [" False", " True"]   # optional

A spec names fields of the data rows only; it holds no paths, so it cannot reach other files.
It stays blind to gold: the label field may not be in the template, the group or the key. A
template takes plain `{field}` placeholders only: no format specs (`{x:>1999999999}` would
allocate gigabytes), conversions or attribute access.
"""

from __future__ import annotations

import math
import string
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .. import files
from ..core.consistency import RULES
from ..core.data import PromptFormat
from ..errors import DataError
from .base import Task

KNOWN = {"name", "template", "group", "label", "consistency", "label_words", "separator", "prefix"}


MAX_SPEC_BYTES = 1 << 20


class SpecLoader(yaml.SafeLoader):
    """YAML as a spec needs it: no aliases (an anchor used many times expands a small file into
    megabytes of prompt), no duplicated keys (YAML keeps one silently), text keys only."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a task spec", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is not text", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(e: Exception) -> str:
    """One line: where in the file, and what."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        return f"line {e.problem_mark.line + 1}: {e.problem or e.context}"
    return str(e).splitlines()[0]


def load_task_spec(path: str | Path) -> Task:
    path = Path(path)
    text = files.read_bytes(path, "task spec", MAX_SPEC_BYTES)
    try:
        spec = yaml.load(text.decode("utf-8-sig"), Loader=SpecLoader)  # noqa: S506 - safe loader
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: invalid YAML/JSON: {_yaml_problem(e)}") from e
    if not isinstance(spec, dict):
        raise DataError(f"{path}: a task spec must be a mapping")
    unknown = set(spec) - KNOWN
    if unknown:
        raise DataError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    template = spec.get("template")
    if not isinstance(template, str) or "{" not in template:
        raise DataError(f"{path}: field 'template' must be a text with {{field}} placeholders")
    placeholders = template_fields(template, path)
    cons = spec.get("consistency") or {}
    if not isinstance(cons, dict):
        raise DataError(f"{path}: field 'consistency' must be a mapping with 'rule' and 'key'")
    rule = cons.get("rule", "none")
    if not isinstance(rule, str) or rule not in RULES:
        raise DataError(f"{path}: field 'consistency.rule' must be one of {', '.join(RULES)}")
    spec_rule = RULES[rule]
    key = cons.get("key")
    if spec_rule.constrains and key is None:
        raise DataError(f"{path}: field 'consistency.key' is required for rule {rule!r}")
    if spec_rule.pair_key and not (isinstance(key, list) and len(key) == 2):
        raise DataError(f"{path}: field 'consistency.key' must be two fields [a, b] for {rule}")
    if not spec_rule.pair_key and key is not None and not isinstance(key, str):
        raise DataError(f"{path}: field 'consistency.key' must be one field name")
    if isinstance(key, list) and not all(isinstance(k, str) for k in key):
        raise DataError(f"{path}: field 'consistency.key' must be field names")
    for name in ("name", "group", "label", "separator", "prefix"):
        if spec.get(name) is not None and not isinstance(spec[name], str):
            raise DataError(f"{path}: field {name!r} must be text")
    if spec_rule.constrains and not spec.get("group"):
        raise DataError(
            f"{path}: field 'group' is required for consistency rule {rule!r} "
            "(rules compare claims of one group)"
        )
    words = spec.get("label_words", [" False", " True"])
    if not (isinstance(words, list) and len(words) == 2 and all(isinstance(w, str) for w in words)):
        raise DataError(f"{path}: field 'label_words' must be two strings [false_word, true_word]")
    if not all(w.strip() for w in words) or words[0].strip().lower() == words[1].strip().lower():
        raise DataError(f"{path}: field 'label_words' must be two different, non-empty words")
    gold = spec.get("label", "label")
    used: dict[str, list[Any]] = {"template": placeholders, "group": [spec.get("group")]}
    used["consistency.key"] = key if isinstance(key, list) else [key]
    for name, names in used.items():
        if gold in names:
            raise DataError(
                f"{path}: field {name!r} uses {gold!r}, the gold-label field: the search must "
                "never see gold labels"
            )
    fmt = PromptFormat(tuple(words), spec.get("separator", "\n\n"), spec.get("prefix", ""))
    task = Task(
        name=str(spec.get("name", path.stem)),
        template=template,
        rule=rule,
        group=spec.get("group"),
        label=gold,
        key=_key_fn(key, spec_rule.pair_key) if spec_rule.constrains and key is not None else None,
        fmt=fmt,
        description=f"custom task from {path}",
    )
    return task


def _key_fn(key: str | list[str], pair: bool):
    fields = key if isinstance(key, list) else [key]

    def fn(row: dict) -> Hashable | None:
        """The key from the row's fields; a missing or null one raises KeyError(field)."""
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            raise KeyError(missing[0])
        bad = [f for f in fields if not _scalar(row[f])]
        if bad:
            raise ValueError(f"field {bad[0]!r} must be text or a finite number")
        values = [str(row[f]) for f in fields]
        return tuple(values) if pair else values[0]

    fn.fields = fields  # type: ignore[attr-defined]
    return fn


def _scalar(v: object) -> bool:
    return isinstance(v, str | int) or (isinstance(v, float) and math.isfinite(v))


def template_fields(template: str, path: Path) -> list[str]:
    """The `{field}` names of a template; anything but plain placeholders is refused."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise DataError(f"{path}: field 'template' is not a valid template: {e}") from e
    names = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name or name.isdigit() or any(c in name for c in ".[]") or spec or conversion:
            shown = "{" + name + ("!" + conversion if conversion else "")
            shown += (":" + spec if spec else "") + "}"
            raise DataError(
                f"{path}: field 'template': {shown[:60]} is not a plain {{field}} placeholder "
                "(format specs, conversions, indexes and positional fields are not allowed)"
            )
        names.append(name)
    return names
