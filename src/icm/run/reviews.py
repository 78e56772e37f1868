"""Fixed labels from a review tool's export: Label Studio's and Argilla's JSON, as `icm export
--format label-studio` or `argilla` sent them out and a reviewer answered them.

Each becomes the rows `--fixed-labels` reads (the claim's fields and `human_label`): the
reviewer's answer to the `label` question, never ICM's pre-annotation or suggestion. A task a
reviewer skipped or cancelled gives no label."""

from __future__ import annotations

from ..errors import DataError

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
        done = [
            a
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        answer = _choice(done[-1].get("result"), path, r) if done else None
        out.append({**_claim(task["data"]), "human_label": answer or ""})
    return out


def from_argilla(rows: list[dict], path: str) -> list[dict]:
    out = []
    for r, record in enumerate(rows, start=1):
        responses = (record.get("responses") or {}).get(QUESTION) or []
        if not isinstance(responses, list):
            raise DataError(f"{path}: row {r}: 'responses.{QUESTION}' must be a list")
        values = [x.get("value") for x in responses if isinstance(x, dict)]
        if len(set(map(str, values))) > 1:
            raise DataError(f"{path}: row {r}: reviewers disagree on {QUESTION!r}: {values}")
        out.append({**_claim(record["fields"]), "human_label": values[0] if values else ""})
    return out


def _choice(result: object, path: str, r: int) -> str | None:
    """The reviewer's choice for `label` in a Label Studio annotation's result."""
    if not isinstance(result, list):
        raise DataError(f"{path}: row {r}: an annotation's 'result' must be a list")
    for item in result:
        if isinstance(item, dict) and item.get("from_name") == QUESTION:
            choices = (item.get("value") or {}).get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise DataError(f"{path}: row {r}: the {QUESTION!r} answer must be one choice")
            return str(choices[0])
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
