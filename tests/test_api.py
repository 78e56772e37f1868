"""`icm.label`: the run stage in one call, on the stand-in scorer (the real model: test_readme)."""

from __future__ import annotations

import pytest

import icm
from icm import files
from icm.errors import ConfigError, DataError, RunError
from icm.run.driver import Run

from .standin import PlantedModel
from .test_readers import ROWS, write

ROWS12 = [{**r, "consistency_id": r["consistency_id"] + 10 * k} for k in range(2) for r in ROWS]


def planted(rows: list[dict]) -> PlantedModel:
    data = icm.get_task("truthfulqa").build(rows)
    return PlantedModel(
        {ex.prompt: int(g) for ex, g in zip(data.examples, data.gold, strict=True)}, 0.2, 0.4
    )


def test_label_rows_in_memory_returns_labels_verdict_and_costs(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = icm.label(ROWS12, task="truthfulqa", model=planted(ROWS12), iterations=6, seed=1)
    assert len(result.labels) == len(result.confidence) == len(result.searched) == 12
    assert result.labels == [bool(r["label"]) for r in ROWS12]  # the planted concept
    assert result.summary["agreement"] == 1.0
    assert result.verdict in ("holds", "no concept", "too small to tell")
    assert result.concept["alpha"] == 0.01 and 0 <= result.concept["p"] <= 1
    cost = result.cost
    assert cost["total"]["seconds"] >= cost["review"]["seconds"] > 0
    assert cost["total"]["calls"] == cost["search"]["calls"] + cost["review"]["calls"]
    assert result.folder is None
    assert not list(tmp_path.iterdir())  # nothing kept
    text = repr(result)
    assert text.startswith("Labelling(12 rows: 6 True / 6 False") and "concept test:" in text
    frame = result.to_pandas()
    assert list(frame["icm_label"]) == result.labels and "question" in frame
    assert result.to_datasets().num_rows == 12


def test_label_a_file_keeps_a_run_folder_only_when_asked(tmp_path):
    path = write(tmp_path / "claims.csv", ROWS12, "csv")
    out = tmp_path / "run"
    result = icm.label(path, model=planted(ROWS12), out=out, iterations=4, chains=2)
    assert result.folder == out
    assert [r["icm_label"] for r in files.read_jsonl(out / "labels.jsonl")] == result.labels
    assert Run.open(out).cfg.data == str(path) and Run.open(out).cfg.chains == 2
    with pytest.raises(RunError, match="already exists"):
        icm.label(path, model=planted(ROWS12), out=out, iterations=4)


def test_rows_in_memory_are_kept_with_the_run_that_keeps_them(tmp_path):
    out = tmp_path / "run"
    model = planted(ROWS12)
    first = icm.label(ROWS12, model=model, out=out, iterations=4)
    cfg = Run.open(out).cfg
    assert cfg.data == str(out / "rows.jsonl")
    assert files.read_jsonl(out / "rows.jsonl") == ROWS12
    again = icm.label(ROWS12[:6], model=model, out=out, iterations=4, overwrite=True)
    assert len(again.labels) == 6 and len(first.labels) == 12
    assert files.read_jsonl(out / "rows.jsonl") == ROWS12[:6]


def test_label_refuses_bad_options_and_rows_before_writing(tmp_path):
    out = tmp_path / "run"
    model = planted(ROWS12)
    with pytest.raises(ConfigError, match="no option bacth_size"):
        icm.label(ROWS12, model=model, out=out, bacth_size=4)
    with pytest.raises(ConfigError, match="--alpha"):
        icm.label(ROWS12, model=model, out=out, alpha=-1.0)
    bad = [dict(r) for r in ROWS12]
    bad[3]["choice"] = float("nan")
    with pytest.raises(DataError, match="row 4"):
        icm.label(bad, model=model, out=out)
    with pytest.raises(ConfigError, match="row 2: expected a dict"):
        icm.label([ROWS12[0], "text"], model=model, out=out)
    for data in (5, {"question": "q"}, b"rows"):
        with pytest.raises(ConfigError, match="data must be a path, a list of row dicts"):
            icm.label(data, model=model, out=out)
    assert not out.exists()


def test_columns_and_renames_in_their_python_forms(tmp_path):
    """`columns` as a list and `field` as a dict, as a notebook writes them."""
    rows = [{"answer": r["choice"], "note": "x", **r} for r in ROWS12]
    for r in rows:
        del r["choice"]
    model = planted(ROWS12)
    keep = ["question", "answer", "label", "consistency_id"]
    result = icm.label(rows, model=model, columns=keep, field={"choice": "answer"}, iterations=4)
    assert [r["choice"] for r in result.rows] == [r["choice"] for r in ROWS12]
    assert "note" not in result.rows[0] and "answer" not in result.rows[0]
    assert result.summary["agreement"] == 1.0


def test_the_paper_preset_from_python(tmp_path):
    result = icm.label(ROWS12, model=planted(ROWS12), algorithm="paper", iterations=4)
    assert result.summary["iterations"] == 4
    with pytest.raises(ConfigError, match="algorithm"):
        icm.label(ROWS12, model=planted(ROWS12), algorithm="papper")


def test_report_to_tensorboard_writes_every_searchs_curves(tmp_path):
    from .conftest import events

    out = tmp_path / "run"
    icm.label(
        ROWS12, model=planted(ROWS12), out=out, iterations=5, chains=2, report_to="tensorboard"
    )
    curves = events(out / "tensorboard")
    for chain in (1, 2):
        for name in ("U", "T", "agreement", "searched_share"):
            assert len(curves[f"batch-1/chain-{chain}/{name}"]) == 5, name
    trace = files.read_jsonl(out / "batches" / "000" / "chain-0" / "trace.jsonl")
    assert curves["batch-1/chain-1/U"] == pytest.approx([r["U"] for r in trace[:5]], rel=1e-6)
    assert curves["batch-1/chain-1/searched_share"][-1] == pytest.approx(trace[4]["labelled"] / 12)
    with pytest.raises(ConfigError, match="--report-to: .neptune. is not one of"):
        icm.label(ROWS12, model=planted(ROWS12), report_to="neptune")
