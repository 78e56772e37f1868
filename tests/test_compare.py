"""`icm compare`: two real policies (a few GRPO steps of the default model, and the default
model itself) on the same prompts, under a reward-model judge and under the label-free pairwise
judge (the base model with an ICM run's labelled comparisons as demonstrations); the statistics;
the report; the bad judges.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from icm.cli import main
from icm.eval.compare import outcomes, pair_accuracy, position_bias, win_stats

from .conftest import PAIRS, comparison_rows

pytest.importorskip("trl")

SMALL = ["--max-new-tokens", "6", "--threads", "1", "--bootstrap", "200"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cmp-prompts") / "prompts.json"
    path.write_text(json.dumps(comparison_rows()))
    return path


@pytest.fixture(scope="module")
def policy(tiny_reward_model, prompts, tmp_path_factory) -> Path:
    """Two GRPO steps at a high learning rate: a policy whose samples differ from the base's."""
    out = tmp_path_factory.mktemp("cmp-policy") / "policy"
    argv = ["rl", "--reward", str(tiny_reward_model), "--prompts", str(prompts), "--out", str(out)]
    argv += ["--steps", "2", "--group-size", "2", "--max-completion-length", "6", "--lr", "5e-3"]
    assert main([*argv, "--threads", "1", "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_reward_model_judge(policy, tiny_reward_model, prompts, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", str(policy), "default", "--prompts", str(prompts)]
    assert main([*argv, "--judge", str(tiny_reward_model), "--out", str(out), *SMALL]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert {p.name for p in out.iterdir()} == {"compare.json", "compare.md", "compare.png"}
    overall = result["overall"]
    assert overall["n"] == len(PAIRS)
    assert overall["a_wins"] + overall["b_wins"] + overall["ties"] == len(PAIRS)
    lo, hi = overall["ci95"]
    assert 0 <= lo <= overall["win_rate"] <= hi <= 1
    assert set(result["categories"]) == {"helpfulness", "harmlessness"}
    assert sum(c["n"] for c in result["categories"].values()) == len(PAIRS)
    assert result["judge"] == {"kind": "reward-model", "path": str(tiny_reward_model), "orders": 1}
    assert result["template"] == "Query: {question}\nResponse 1:"  # the policy's own
    assert result["identical"] < len(PAIRS)
    for item in result["items"]:
        if item["a"] != item["b"]:
            margin = item["reward_a"] - item["reward_b"]
            assert item["outcome"] == (1.0 if margin > 0 else 0.0 if margin < 0 else 0.5)
    printed = capsys.readouterr().out
    assert "| all | 6 |" in printed and "compare.png" in printed

    # A policy against itself: the same seeded samples, a tie on every prompt.
    same = tmp_path / "same"
    argv = ["compare", str(policy), str(policy), "--prompts", str(prompts)]
    assert main([*argv, "--judge", str(tiny_reward_model), "--out", str(same), *SMALL]) == 0
    result = json.loads((same / "compare.json").read_text())
    assert result["overall"]["ties"] == len(PAIRS) and result["overall"]["win_rate"] == 0.5


@pytest.mark.slow
def test_label_free_judge_in_both_orders_and_in_the_report(
    policy, comparison_run, prompts, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(comparison_run, run)
    argv = ["compare", str(policy), "default", "--prompts", str(prompts), "--judge", str(run)]
    assert main([*argv, "--out", str(run), "--max-demos", "4", *SMALL]) == 0
    result = json.loads((run / "compare.json").read_text())
    judge = result["judge"]
    assert judge["kind"] == "icm-pairwise" and judge["orders"] == 2 and judge["demos"] == 4
    assert judge["labels"] == "ICM (no human labels)"
    judged = [i for i in result["items"] if i["a"] != i["b"]]
    for item in judged:
        assert item["margin"] == pytest.approx(
            (item["logodds_ab"] - item["logodds_ba"]) / 2, abs=1e-3
        )
    assert judged  # the policy's samples differ from the base's
    assert 0 <= result["position"]["first_shown_wins"] <= 1
    assert "Position bias" in (run / "compare.md").read_text()
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Head to head" in html and "win rate of A" in html


def test_bad_judges_give_one_line(
    tiny_reward_model, default_model_converted, prompts, tmp_path, capsys
):
    from icm import files
    from icm.run.config import RunConfig

    claims = tmp_path / "claims"
    claims.mkdir()
    files.write_json(claims / "config.json", RunConfig(task="truthfulqa", data="").to_json())
    rows = [
        {"question": "q", "choice": c, "consistency_id": 0, "icm_label": y}
        for c, y in (("a", True), ("b", False))
    ]
    files.write_jsonl(claims / "labels.jsonl", rows)
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nothing"): "nothing: no such model folder",
        str(tmp_path / "empty"): "cannot load the judge",
        default_model_converted: "not a one-output sequence classifier",
        str(claims): "does not compare two responses",
    }
    for judge, expect in cases.items():
        out = tmp_path / "out"
        argv = ["compare", "default", "default", "--prompts", str(prompts), "--judge", judge]
        capsys.readouterr()
        assert main([*argv, "--out", str(out), "--threads", "1"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("icm: ") and expect in err[0], err
        assert not out.exists()
    out = tmp_path / "user"
    out.mkdir()
    (out / "compare.json").write_text("{}")  # not one icm wrote
    argv = [
        "compare",
        "default",
        "default",
        "--prompts",
        str(prompts),
        "--judge",
        str(tiny_reward_model),
    ]
    assert main([*argv, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "compare.json").read_text() == "{}"


def test_win_rate_counts_ties_half_and_resamples_prompts():
    o = outcomes(np.array([1.0, -2.0, 0.0, 3.0]), np.array([False, False, False, True]))
    assert o.tolist() == [1.0, 0.0, 0.5, 0.5]
    s = win_stats(o, 500, 0)
    assert (s["a_wins"], s["b_wins"], s["ties"], s["win_rate"]) == (1, 1, 2, 0.5)
    assert s["ci95"][0] < 0.5 < s["ci95"][1]
    assert win_stats(np.ones(5), 100, 0)["ci95"] == [1.0, 1.0]
    acc = pair_accuracy([0.3, -0.1, 0.0, 2.0], 200)
    assert acc["n"] == 4 and acc["accuracy"] == 0.625


def test_position_bias_of_a_judge_that_always_prefers_the_first():
    verdicts = {"margin": np.zeros(3), "logodds_ab": np.ones(3), "logodds_ba": np.ones(3)}
    bias = position_bias(verdicts, np.ones(3, dtype=bool))
    assert bias["first_shown_wins"] == 1.0 and bias["orders_agree"] == 0.0
    assert position_bias({"margin": np.zeros(3)}, np.ones(3, dtype=bool)) is None
