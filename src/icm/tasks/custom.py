"""Custom tasks from a small YAML or JSON spec.

name: sentiment
template: "Review: {text}\\nClaim: the review is positive.\\nI think this claim is"
group: product_id          # optional: the field that groups claims
label: gold                # optional: the gold-label field, for agreement only
consistency:               # optional, default none
  rule: equivalence        # none | same-answer | equivalence | asymmetry
  key: topic               # one field, or two fields for asymmetry: [a, b]
label_words: [" False", " True"]   # optional

Optional too: `separator` and `prefix` (how demonstrations are joined), `aliases` (other names a
field may have in the data: `{choice: [cot]}`), `unique: false` (two rows of a group may make
one prompt), `description`, and the named hooks of `hooks.py`: `consistency.parse:
final-answer` (the key is the final answer in the key field's text, as GSM8K's) and `expand:
gsm8k-solutions` (rows of another layout into claim rows). The built-in tasks are specs too
(`builtin.py`).

A spec names fields of the data rows only; it holds no paths, so it cannot reach other files.
It stays blind to gold: the label field may not be in the template, the group or the key. A
template takes plain `{field}` placeholders only: no format specs (`{x:>1999999999}` would
allocate gigabytes), conversions or attribute access.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml

from .. import files
from ..core.consistency import RULES
from ..core.data import PromptFormat
from ..errors import DataError
from .base import Task
from .hooks import KEY_PARSERS, LAYOUTS

KNOWN = {
    "name",
    "template",
    "group",
    "label",
    "consistency",
    "label_words",
    "separator",
    "prefix",
    "aliases",
    "expand",
    "unique",
    "description",
}


MAX_SPEC_BYTES = 1 << 20


class SpecLoader(yaml.SafeLoader):
    """YAML as a spec needs it: no aliases (an anchor used many times expands a small file into
    megabytes of prompt), no duplicated keys (YAML keeps one silently), text keys only."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a task spec", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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
    """A custom task from a YAML or JSON spec file."""
    path = Path(path)
    text = files.read_bytes(path, "task spec", MAX_SPEC_BYTES)
    try:
        spec = yaml.load(text.decode("utf-8-sig"), Loader=SpecLoader)  # noqa: S506 - safe loader
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: invalid YAML/JSON: {_yaml_problem(e)}") from e
    if not isinstance(spec, dict):
        raise DataError(f"{path}: a task spec must be a mapping")
    return task_from_spec(spec, str(path), path.stem, f"custom task from {path}")


def task_from_spec(spec: dict, where: str, name: str, description: str = "") -> Task:
    """A task from a spec's fields (see the module docstring), checked; `where` names the spec
    in messages, `name` and `description` are used when the spec gives none."""
    unknown = set(spec) - KNOWN
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    template = spec.get("template")
    if not isinstance(template, str) or "{" not in template:
        raise DataError(f"{where}: field 'template' must be a text with {{field}} placeholders")
    placeholders = template_fields(template, where)
    rule, key, parse = _consistency(spec, where)
    for field in ("name", "group", "label", "separator", "prefix", "description", "expand"):
        if spec.get(field) is not None and not isinstance(spec[field], str):
            raise DataError(f"{where}: field {field!r} must be text")
    if RULES[rule].constrains and not spec.get("group"):
        raise DataError(
            f"{where}: field 'group' is required for consistency rule {rule!r} "
            "(rules compare claims of one group)"
        )
    aliases = _aliases(spec, where)
    gold = spec.get("label", "label")
    used: dict[str, list[Any]] = {"template": placeholders, "group": [spec.get("group")]}
    used["consistency.key"] = key if isinstance(key, list) else [key]
    used["aliases"] = [a for names in aliases.values() for a in names]
    for field, names in used.items():
        if gold in names:
            raise DataError(
                f"{where}: field {field!r} uses {gold!r}, the gold-label field: the search must "
                "never see gold labels"
            )
    expand = spec.get("expand")
    if expand is not None and expand not in LAYOUTS:
        raise DataError(f"{where}: field 'expand' must be one of {', '.join(LAYOUTS)}")
    if not isinstance(spec.get("unique", True), bool):
        raise DataError(f"{where}: field 'unique' must be true or false")
    constrained = RULES[rule].constrains and key is not None
    return Task(
        name=str(spec.get("name", name)),
        template=template,
        rule=rule,
        group=spec.get("group"),
        label=gold,
        key=_key_fn(key, RULES[rule].pair_key, aliases, parse) if constrained else None,
        aliases={k: tuple(v) for k, v in aliases.items()},
        fmt=PromptFormat(
            _label_words(spec, where), spec.get("separator", "\n\n"), spec.get("prefix", "")
        ),
        expand=LAYOUTS[expand] if expand else None,
        unique=spec.get("unique", True),
        description=spec.get("description") or description,
    )


def _aliases(spec: dict, where: str) -> dict[str, list[str]]:
    aliases = spec.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in aliases.values()
    ):
        raise DataError(f"{where}: field 'aliases' must map field names to lists of names")
    return aliases


def _consistency(spec: dict, path: str) -> tuple[str, Any, str | None]:
    """The spec's consistency rule and key fields, checked against what the rule needs."""
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
    parse = cons.get("parse")
    if parse is not None and (spec_rule.pair_key or parse not in KEY_PARSERS):
        raise DataError(
            f"{path}: field 'consistency.parse' must be one of {', '.join(KEY_PARSERS)}, "
            "for a key of one field"
        )
    return rule, key, parse


def _label_words(spec: dict, path: str) -> tuple[str, str]:
    words = spec.get("label_words", [" False", " True"])
    if not (isinstance(words, list) and len(words) == 2 and all(isinstance(w, str) for w in words)):
        raise DataError(f"{path}: field 'label_words' must be two strings [false_word, true_word]")
    if not all(w.strip() for w in words) or words[0].strip().lower() == words[1].strip().lower():
        raise DataError(f"{path}: field 'label_words' must be two different, non-empty words")
    return words[0], words[1]


def _key_fn(
    key: str | list[str], pair: bool, aliases: dict[str, list[str]], parse: str | None
) -> Callable[[dict], Hashable | None]:
    fields = key if isinstance(key, list) else [key]

    def value(row: dict, f: str) -> object:
        name = next((a for a in (f, *aliases.get(f, ())) if row.get(a) is not None), f)
        return row.get(name)

    def fn(row: dict) -> Hashable | None:
        """The key from the row's fields; a missing or null one raises KeyError(field)."""
        values = [value(row, f) for f in fields]
        missing = [f for f, v in zip(fields, values, strict=True) if v is None]
        if missing:
            raise KeyError(missing[0])
        bad = [f for f, v in zip(fields, values, strict=True) if not _scalar(v)]
        if bad:
            raise ValueError(f"field {bad[0]!r} must be text or a finite number")
        texts = [str(v) for v in values]
        if parse:
            return KEY_PARSERS[parse](texts[0])
        return tuple(texts) if pair else texts[0]

    fn.fields = fields  # type: ignore[attr-defined]
    return fn


def _scalar(v: object) -> bool:
    return isinstance(v, str | int) or (isinstance(v, float) and math.isfinite(v))


def template_fields(template: str, path: str | Path) -> list[str]:
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
