"""Fixed labels from a review tool's export: Label Studio's and Argilla's JSON, as `icm export
--format label-studio` or `argilla` sent them out and a reviewer answered them.

Each becomes the rows `--fixed-labels` reads (the claim's fields and `human_label`): the
reviewer's answer to the `label` question, never ICM's pre-annotation or suggestion. A task a
reviewer skipped or cancelled gives no label."""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..tasks.readers import json_type

QUESTION = "label"


def review_tool(rows: list[dict]) -> str | None:
    """Which tool's export `rows` are: 'label-studio', 'argilla', or None (plain rows)."""
    if rows and all(isinstance(r.get("data"), dict) for r in rows):
        return "label-studio"
    if rows and all(isinstance(r.get("fields"), dict) for r in rows):
        return "argilla"
    return None


def from_label_studio(rows: list[dict], path: str) -> list[dict]:
    out = []
    for r, task in enumerate(rows, start=1):
        annotations = _typed(task.get("annotations") or [], list, path, r, "annotations")
        answers = [
            _choice(_typed(a, dict, path, r, "annotations[]").get("result"), path, r)
            for a in annotations
            if not (isinstance(a, dict) and a.get("was_cancelled"))
        ]
        given = [a for a in answers if a is not None]
        out.append({**_claim(task["data"]), "human_label": _agreed(given, path, r)})
    return out


def from_argilla(rows: list[dict], path: str) -> list[dict]:
    out = []
    for r, record in enumerate(rows, start=1):
        responses = _typed(record.get("responses") or {}, dict, path, r, "responses")
        answers = _typed(responses.get(QUESTION) or [], list, path, r, f"responses.{QUESTION}")
        values = [_typed(x, dict, path, r, f"responses.{QUESTION}[]").get("value") for x in answers]
        out.append({**_claim(record["fields"]), "human_label": _agreed(values, path, r)})
    return out


def _agreed(answers: list, path: str, r: int) -> Any:
    """The reviewers' one answer ("" when none answered); reviewers who disagree are one line."""
    if len(set(map(str, answers))) > 1:
        raise DataError(f"{path}: row {r}: reviewers disagree on {QUESTION!r}: {answers}")
    return answers[0] if answers else ""


def _typed(value: Any, kind: type, path: str, r: int, name: str) -> Any:
    """`value` if it is a `kind` (a list or an object), else one line naming the field."""
    if not isinstance(value, kind):
        want = "a list" if kind is list else "an object"
        raise DataError(f"{path}: row {r}: field {name!r} must be {want}, got {json_type(value)}")
    return value


def _choice(result: object, path: str, r: int) -> object:
    """The reviewer's choice for `label` in a Label Studio annotation's result."""
    for item in _typed(result, list, path, r, "annotations[].result"):
        if isinstance(item, dict) and item.get("from_name") == QUESTION:
            value = _typed(item.get("value") or {}, dict, path, r, "result[].value")
            choices = value.get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise DataError(f"{path}: row {r}: the {QUESTION!r} answer must be one choice")
            return choices[0]
    return None


def _claim(data: dict) -> dict:
    """The claim's own fields: icm's bookkeeping and the tool's display text left out."""
    return {k: v for k, v in data.items() if not k.startswith("icm_") and k != "text"}


def as_fixed_rows(rows: list, path: str) -> list:
    """`rows` as plain fixed-label rows when they are a review tool's export, else as given."""
    tool = review_tool([r for r in rows if isinstance(r, dict)]) if rows else None
    if tool == "label-studio":
        return from_label_studio(rows, path)
    if tool == "argilla":
        return from_argilla(rows, path)
    return rows
