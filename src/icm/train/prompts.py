"""Prompts for a policy: read from a data file, formatted as the reward model saw its prompts.

A row's `prompt` field is used as it is (an `icm export --format rm` file has one). Any other row
fills a template: `{question}` by default, and for a reward model icm trained, the form of the
prompts it was trained on (the task's template up to the first response, e.g.
"Query: {question}\\nResponse 1:"), recorded in its META file. An Alpaca row's `instruction` and
`input` supply `question`. Prompts are kept once each, in file order (a pairs file states each
prompt twice or more), with the row's category (`category`, else Alpaca's `hh_type`) when it has
one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import ConfigError, DataError
from ..export.records import response_fields
from ..tasks import Task
from ..tasks.readers import ReadOptions, json_type, read_rows
from .config import META

DEFAULT_TEMPLATE = "{question}"
CATEGORY_FIELDS = ("category", "hh_type")


@dataclass(frozen=True)
class Prompt:
    text: str
    """What the policy continues."""
    question: str
    """The query alone: what a pairwise judge is told was asked."""
    category: str | None
    row: int
    """The row (1-based) it first appears on."""


def template_fields(template: str, option: str = "--template") -> list[str]:
    """The fields a template names (a recorded one may name none: every row gets the same
    prompt); only plain `{name}` placeholders are allowed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{option}: {template!r} is not a valid template ({e})") from e
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ConfigError(f"{option}: only plain {{field}} placeholders, not {{{name}}}")
        names.append(name)
    return names


def task_prompt_template(task: Task) -> str:
    """The template of a task's pair prompts (`icm export --format rm`): the task's template up
    to its first response field, placeholders kept."""
    first = response_fields(task)[0]
    head = task.fmt.prefix
    for literal, name, _, _ in string.Formatter().parse(task.template):
        head += literal
        if name is None or name == first:
            break
        head += "{" + name + "}"
    return head.rstrip()


def recorded_template(folder: str) -> str | None:
    """The prompt template a model folder icm trained records in its META file, if any."""
    path = Path(folder, META)
    if not path.is_file():
        return None
    meta = files.read_json(path, "training record")
    template = meta.get("prompt_template") if isinstance(meta, dict) else None
    if not (isinstance(template, str) and template):
        return None
    template_fields(template, f"{path}: prompt_template")  # a folder from elsewhere: checked
    return template


def pick_template(given: str, *folders: str) -> str:
    """The template to use: the one given, else the first recorded in `folders`, else
    '{question}'."""
    if given:
        given = given.replace("\\n", "\n")
        if not template_fields(given):
            raise ConfigError(f"--template: {given!r} names no field, e.g. {{question}}")
        return given
    for folder in folders:
        if folder and (found := recorded_template(folder)):
            return found
    return DEFAULT_TEMPLATE


def _text(row: dict, name: str, path: str, r: int) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise DataError(f"{path}: row {r}: field '{name}' must be text, got {json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{path}: row {r}: field '{name}' holds an invalid character") from e
    return value


def _fields(row: dict, path: str, r: int) -> dict:
    """The row's fields, with `question` from an Alpaca `instruction` (+ `input`) row."""
    if "question" not in row and "instruction" in row:
        question = _text(row, "instruction", path, r)
        extra = _text(row, "input", path, r) if row.get("input") is not None else ""
        return {**row, "question": question + ("\n\n" + extra if extra.strip() else "")}
    return row


def unfill(template: str, names: list[str], text: str) -> str:
    """The query inside a prompt made by a one-field template (an `icm export` pair prompt,
    "Query: ...\\nResponse 1:"); the prompt itself otherwise."""
    if names != ["question"]:
        return text
    head, tail = template.split("{question}", 1)
    inside = len(text) >= len(head) + len(tail)
    return (
        text[len(head) : len(text) - len(tail)]
        if inside and text.startswith(head) and text.endswith(tail)
        else text
    )


def make_prompt(row: dict, template: str, names: list[str], path: str, r: int) -> Prompt:
    category = next((row[f] for f in CATEGORY_FIELDS if row.get(f) is not None), None)
    if category is not None and not isinstance(category, str | int):
        raise DataError(f"{path}: row {r}: the category must be text, got {json_type(category)}")
    category = None if category is None else str(category)
    if "prompt" in row:
        text = _text(row, "prompt", path, r)
        question = unfill(template, names, text)
    else:
        fields = _fields(row, path, r)
        missing = [n for n in names if n not in fields]
        if missing:
            raise DataError(
                f"{path}: row {r}: no prompt: expected a 'prompt' field or the template's "
                f"'{missing[0]}'"
            )
        values = {n: _text(fields, n, path, r) for n in names}
        text = template.format_map(values)
        question = values.get("question", text)
    if not text.strip():
        raise DataError(f"{path}: row {r}: the prompt is empty")
    return Prompt(text, question, category, r)


def load_prompts(
    path: str, template: str, limit: int | None = None, read: ReadOptions | None = None
) -> list[Prompt]:
    """The distinct prompts of a file, in file order; one DataError line per bad row."""
    names = template_fields(template)
    seen: dict[str, Prompt] = {}
    rows, lines = read_rows(path, read)
    for row, r in zip(rows, lines, strict=True):
        p = make_prompt(row, template, names, path, r)
        seen.setdefault(p.text, p)
        if limit is not None and len(seen) >= limit:
            break
    if not seen:
        raise DataError(f"{path}: no prompts")
    return list(seen.values())
