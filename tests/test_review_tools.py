"""Exports for Label Studio and Argilla, answered there, read back by --fixed-labels."""

from __future__ import annotations

import dataclasses
import json

import pytest

from icm import files
from icm.cli import main
from icm.errors import DataError
from icm.run import Run
from icm.run.plan import prepare

from .test_trust import setup


@pytest.fixture
def done(tmp_path):
    cfg, model = setup(tmp_path, iterations=6)
    Run.create(cfg, tmp_path / "run").execute(model)
    return cfg, model, tmp_path / "run"


def export(run, fmt: str, out, *extra: str) -> list[dict]:
    argv = ["export", str(run), "--format", fmt, "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def by_confidence(run) -> list[int]:
    rows = files.read_jsonl(run / "labels.jsonl")
    return sorted(range(len(rows)), key=lambda i: (rows[i]["icm_confidence"], i))


def test_label_studio_tasks_keep_confidence_and_the_least_certain_order(done, tmp_path):
    _, _, run = done
    tasks = export(run, "label-studio", tmp_path / "ls.json", "--least-certain", "5")
    assert [t["data"]["icm_row"] for t in tasks] == by_confidence(run)[:5]
    assert [t["data"]["icm_rank"] for t in tasks] == list(range(5))
    labels = files.read_jsonl(run / "labels.jsonl")
    for t in tasks:
        row = labels[t["data"]["icm_row"]]
        (pred,) = t["predictions"]
        assert pred["score"] == row["icm_confidence"] and pred["model_version"] == "icm"
        assert pred["result"][0]["value"]["choices"] == [str(row["icm_label"])]
        assert row["question"] in t["data"]["text"] and row["choice"] in t["data"]["text"]
        assert "label" not in t["data"]  # the gold field never goes out


def test_answers_in_label_studio_come_back_as_fixed_labels(done, tmp_path):
    cfg, model, run = done
    tasks = export(run, "label-studio", tmp_path / "ls.json")
    choice = {"from_name": "label", "to_name": "text", "type": "choices"}
    tasks[0]["annotations"] = [{"result": [{**choice, "value": {"choices": ["True"]}}]}]
    tasks[1]["annotations"] = [
        {"result": [{**choice, "value": {"choices": ["False"]}}], "was_cancelled": True}
    ]
    (tmp_path / "answered.json").write_text(json.dumps(tasks))
    fixed_cfg = dataclasses.replace(cfg, fixed_labels=str(tmp_path / "answered.json"))
    fixed = prepare(fixed_cfg, model).fixed
    assert fixed == {tasks[0]["data"]["icm_row"]: 1}  # the cancelled answer gives nothing
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["True", "False"]
    (tmp_path / "answered.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="answered.json: row 1: the 'label' answer must be one"):
        prepare(fixed_cfg, model)


def test_answers_in_argilla_come_back_as_fixed_labels(done, tmp_path):
    cfg, model, run = done
    records = export(run, "argilla", tmp_path / "ar.json", "--least-certain", "4")
    order = by_confidence(run)[:4]
    assert [r["metadata"]["icm_row"] for r in records] == order
    labels = files.read_jsonl(run / "labels.jsonl")
    for r in records:
        row = labels[r["metadata"]["icm_row"]]
        assert r["suggestions"]["label"] == {
            "value": str(row["icm_label"]),
            "agent": "icm",
            "score": row["icm_confidence"],
        }
        assert all(isinstance(v, str) for v in r["fields"].values())
    records[2]["responses"] = {"label": [{"value": "False", "user_id": "a"}]}
    (tmp_path / "answered.json").write_text(json.dumps(records))
    fixed_cfg = dataclasses.replace(cfg, fixed_labels=str(tmp_path / "answered.json"))
    assert prepare(fixed_cfg, model).fixed == {order[2]: 0}
    records[2]["responses"]["label"].append({"value": "True", "user_id": "b"})
    (tmp_path / "answered.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match="row 3: reviewers disagree"):
        prepare(fixed_cfg, model)


CHOSE = {"from_name": "label", "value": {"choices": ["True"]}}


@pytest.mark.parametrize(
    "fmt, key, answer, message",
    [
        (
            "label-studio",
            "annotations",
            {"result": [CHOSE]},
            "'annotations' must be a list, got an",
        ),
        ("label-studio", "annotations", "True", "'annotations' must be a list, got text"),
        ("label-studio", "annotations", [7], "'annotations\\[\\]' must be an object"),
        ("label-studio", "annotations", [{"result": CHOSE}], "'annotations\\[\\].result' must"),
        (
            "label-studio",
            "annotations",
            [{"result": [{"from_name": "label", "value": ["True"]}]}],
            "'result\\[\\].value' must be an object, got a list",
        ),
        (
            "label-studio",
            "annotations",
            [{"result": [CHOSE]}, {"result": [{**CHOSE, "value": {"choices": ["False"]}}]}],
            "reviewers disagree on 'label'",
        ),
        ("argilla", "responses", [{"value": "True"}], "'responses' must be an object, got a list"),
        ("argilla", "responses", {"label": {"value": "True"}}, "'responses.label' must be a list"),
        ("argilla", "responses", {"label": ["True"]}, "'responses.label\\[\\]' must be an"),
    ],
)
def test_a_malformed_answer_is_one_line_naming_row_and_field(
    done, tmp_path, fmt, key, answer, message
):
    """Whatever a reviewer's tool or an editor puts where the answer goes, never a traceback."""
    cfg, model, run = done
    records = export(run, fmt, tmp_path / "out.json")
    records[0][key] = answer
    (tmp_path / "answered.json").write_text(json.dumps(records))
    fixed_cfg = dataclasses.replace(cfg, fixed_labels=str(tmp_path / "answered.json"))
    with pytest.raises(DataError, match=f"answered.json: row 1: field {message}|row 1: {message}"):
        prepare(fixed_cfg, model)


def test_review_tool_exports_are_json_files(done, tmp_path, capsys):
    _, _, run = done
    out = tmp_path / "tasks.csv"
    assert main(["export", str(run), "--format", "argilla", "--out", str(out)]) == 2
    assert ".json" in capsys.readouterr().err and not out.exists()
    argv = ["export", str(run), "--format", "dpo", "--least-certain", "2"]
    assert main([*argv, "--out", str(tmp_path / "p.jsonl")]) == 2
