"""Exports for review where reviewers work: Label Studio's and Argilla's import JSON.

Both carry the rows of `--format review` (least certain first, rows a person labelled left
out), ICM's label as a pre-annotation with its confidence as the score, and `icm_row` and
`icm_rank` (0: least certain) so the order survives a tool's own sorting. The question is
named `label` with the choices `True` and `False` in both tools. `icm run --fixed-labels`
reads each tool's export back (`run/reviews.py`): the reviewer's answer, never ICM's own.

Label Studio: a list of tasks `{"data": {...}, "predictions": [{"model_version": "icm",
"score": c, "result": [choices]}]}`, for a labelling config with `<Choices name="label"
toRef="text">` (the config is in the README). Argilla (2.x): a list of records `{"fields": {...},
"metadata": {...}, "suggestions": {"label": {"value": "True", "score": c, "agent": "icm"}}}`
for a dataset with a `label` LabelQuestion, as `dataset.records.log(records)` takes them.
"""

from __future__ import annotations

from ..run.labels import Labelled
from .records import export_format, review

QUESTION = "label"
"""The question both tools ask; `run/reviews.py` reads the answers to it."""
TEXT = "text"
"""Label Studio: the data field the labelling config shows (the claim, in full)."""


def _claim(data: Labelled, row: dict) -> str:
    """The claim as the model reads it: the task's template filled with the row's fields."""
    built = data.task.build([{k: v for k, v in row.items() if not k.startswith("icm_")}])
    return built.examples[0].prompt


def _shown(data: Labelled, k: int | None) -> list[tuple[int, dict]]:
    return list(enumerate(review(data, k)))


@export_format("label-studio")
def label_studio(data: Labelled, k: int | None) -> list[dict]:
    out = []
    for rank, r in _shown(data, k):
        fields = {f: v for f, v in r.items() if f not in ("human_label", "icm_label")}
        word = "True" if r["icm_label"] else "False"
        choice = {"from_name": QUESTION, "to_name": TEXT, "type": "choices"}
        out.append(
            {
                "data": {TEXT: _claim(data, fields), **fields, "icm_rank": rank},
                "predictions": [
                    {
                        "model_version": "icm",
                        "score": r["icm_confidence"],
                        "result": [{**choice, "value": {"choices": [word]}}],
                    }
                ],
            }
        )
    return out


@export_format("argilla")
def argilla(data: Labelled, k: int | None) -> list[dict]:
    out = []
    for rank, r in _shown(data, k):
        fields = {
            f: ("" if v is None else str(v))
            for f, v in r.items()
            if f not in ("human_label", "icm_label", "icm_row", "icm_confidence")
        }
        suggestion = {"value": "True" if r["icm_label"] else "False", "agent": "icm"}
        if r["icm_confidence"] is not None:
            suggestion["score"] = r["icm_confidence"]
        out.append(
            {
                "fields": {TEXT: _claim(data, r), **fields},
                "metadata": {"icm_row": r["icm_row"], "icm_rank": rank},
                "suggestions": {QUESTION: suggestion},
            }
        )
    return out
