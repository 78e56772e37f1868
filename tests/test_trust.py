"""Labels people can trust: chains and confidence, warnings, review files and fixed labels.

The search logic runs on the deterministic stand-in scorer (tests/standin.py); the real model's
side of these features is measured by benchmarks/bench_quality.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from icm import files
from icm.cli import main
from icm.core.search import SearchConfig
from icm.errors import DataError, RunError
from icm.run import Run, load_data
from icm.run.checks import warnings
from icm.run.config import RunConfig

from .standin import PlantedModel


def claims(n_groups: int = 6) -> list[dict]:
    return [
        {
            "question": f"Question {g}?",
            "choice": f"Answer {k} to question {g}.",
            "label": (g + k) % 2 == 0,
            "consistency_id": g,
        }
        for g in range(n_groups)
        for k in range(2)
    ]


def setup(tmp_path: Path, **kw) -> tuple[RunConfig, PlantedModel]:
    data = tmp_path / "d.jsonl"
    files.write_jsonl(data, claims(kw.pop("groups", 6)))
    cfg = RunConfig(data=str(data), **kw)
    _, loaded = load_data(cfg)
    planted = {ex.prompt: int(g) for ex, g in zip(loaded.examples, loaded.gold, strict=True)}
    return cfg, PlantedModel(planted, weight=0.2, bias=0.4)


def labels_of(folder: Path) -> list[dict]:
    return files.read_jsonl(folder / "labels.jsonl")


@pytest.mark.parametrize("rule", ["best-u", "vote"])
def test_chains_combine_and_every_row_has_a_confidence(tmp_path, rule):
    cfg, model = setup(tmp_path, chains=3, iterations=8, combine=rule, search=SearchConfig.paper())
    summary = Run.create(cfg, tmp_path / "run").execute(model)
    rows = labels_of(tmp_path / "run")
    finals = [
        files.read_json(tmp_path / "run" / "batches" / "000" / f"chain-{c}" / "final.json")
        for c in range(3)
    ]
    votes = np.array([f["final"] for f in finals])
    best = int(np.argmax([f["utility"] for f in finals]))
    got = [int(r["icm_label"]) for r in rows]
    if rule == "vote":
        assert got == [int(v > 1.5) for v in votes.sum(0)]
    else:
        assert got == list(votes[best])
    # Confidence: the mean over chains of the probability each gives the row's label.
    lo = np.array([f["logodds"] for f in finals])
    signed = np.where(np.array(got) == 1, lo, -lo)
    expected = (1 / (1 + np.exp(-signed))).mean(0)
    np.testing.assert_allclose([r["icm_confidence"] for r in rows], expected)
    # The chains differ (seeds (seed, batch, chain)) and the summary says how much they agree.
    assert len({tuple(f["labels"]) for f in finals}) > 1
    assert summary["chains"] == 3 and 0 <= summary["chain_agreement"] <= 1
    assert len(summary["per_batch"][0]["per_chain"]) == 3


def test_workers_give_the_labels_of_a_sequential_run(tmp_path):
    outs = []
    for workers in (1, 4):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        cfg, model = setup(folder, chains=2, batch_size=4, iterations=6, workers=workers)
        summary = Run.create(cfg, folder / "run").execute(model)
        assert summary["batches"] == 3
        outs.append((labels_of(folder / "run"), summary["utility"]))
    assert outs[0] == outs[1]


def test_warnings_name_what_a_careful_user_must_check():
    base = {
        "examples": 20,
        "labels": {"true": 19, "false": 1},
        "zero_shot_true": 0.3,
        "chains": 3,
        "chain_disagreement": 0.45,
        "inconsistencies": 2,
        "searched_share": 0.8,
    }
    found = warnings(base)
    assert [w.split(":")[0] for w in found] == [
        "collapse",
        "prior",
        "chains",
        "inconsistencies",
        "coverage",
    ]
    calm = {**base, "labels": {"true": 9, "false": 11}, "zero_shot_true": 0.5}
    calm |= {"chain_disagreement": 0.1, "inconsistencies": 0, "searched_share": 1.0}
    assert warnings(calm) == []


def test_a_run_records_its_warnings(tmp_path):
    cfg, _ = setup(tmp_path, iterations=1, search=SearchConfig.paper(initial=2))

    class SaysTrue(PlantedModel):
        def _logprobs(self, prompt, demos, labels):
            return np.log([0.05, 0.95])

    summary = Run.create(cfg, tmp_path / "run").execute(SaysTrue({}))
    kinds = [w.split(":")[0] for w in summary["warnings"]]
    assert "collapse" in kinds and "coverage" in kinds
    assert (
        json.loads((tmp_path / "run" / "summary.json").read_text())["warnings"]
        == summary["warnings"]
    )


# -- a person's labels -----------------------------------------------------------------------------
def test_review_then_fixed_labels(tmp_path, capsys):
    cfg, model = setup(tmp_path, iterations=6)
    Run.create(cfg, tmp_path / "run").execute(model)
    review = tmp_path / "review.csv"
    argv = ["export", str(tmp_path / "run"), "--format", "review", "--least-certain", "3"]
    assert main([*argv, "--out", str(review)]) == 0
    capsys.readouterr()
    with open(review, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "label" not in rows[0]  # never the gold field
    conf = [float(r["icm_confidence"]) for r in rows]
    assert conf == sorted(conf)
    everything = [r["icm_confidence"] for r in labels_of(tmp_path / "run")]
    assert conf[0] == pytest.approx(min(everything))
    assert all(r["human_label"] == "" for r in rows)

    # A person labels two of them, against what the model believes; a new run keeps them.
    rows[0]["human_label"], rows[1]["human_label"] = "false", "true"
    with open(review, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg2 = RunConfig(data=cfg.data, iterations=10, fixed_labels=str(review))
    Run.create(cfg2, tmp_path / "run2").execute(model)
    out = labels_of(tmp_path / "run2")
    by_row = {int(r["icm_row"]): r for r in rows}
    fixed = {k: out[k] for k in list(by_row)[:2]}
    assert [r["icm_label"] for r in fixed.values()] == [False, True]
    assert all(r["icm_fixed"] and r["icm_confidence"] == 1.0 for r in fixed.values())
    assert sum(bool(r.get("icm_fixed")) for r in out) == 2
    trace = files.read_jsonl(tmp_path / "run2" / "batches" / "000" / "chain-0" / "trace.jsonl")
    uids = {str(k) for k in fixed}
    touched = [t.get("example") for t in trace] + [u for t in trace for u in t.get("changed", [])]
    assert not uids & set(touched)  # never proposed, never changed when settling

    # The same run with other fixed labels is another run: a resume refuses it.
    rows[0]["human_label"] = "true"
    with open(review, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(RunError, match="fixed labels"):
        Run.open(tmp_path / "run2").execute(model)


def test_fixed_labels_that_match_no_claim_are_one_line(tmp_path):
    cfg, model = setup(tmp_path, iterations=2)
    bad = tmp_path / "fixed.jsonl"
    files.write_jsonl(
        bad, [{"question": "Question 0?", "choice": "Not in the data.", "human_label": True}]
    )
    cfg.fixed_labels = str(bad)
    with pytest.raises(DataError, match=r"fixed.jsonl: row 1: matches no claim"):
        Run.create(cfg, tmp_path / "run").execute(model)
