"""The fast tier's one real-model check: `icm run` on four demo claims with the embedded default
model, end to end through the command line, in seconds."""

from __future__ import annotations

import json

from icm import files
from icm.cli import main
from icm.demo import make_demo_rows


def test_a_real_model_labels_four_claims_end_to_end(tmp_path, capsys):
    data = tmp_path / "claims.jsonl"
    rows = make_demo_rows(4, seed=0)
    files.write_jsonl(data, rows)
    out = tmp_path / "run"
    argv = ["run", "--task", "demo", "--data", str(data), "--out", str(out)]
    assert main([*argv, "--iterations", "2", "--threads", "1", "--no-progress"]) == 0
    labels = files.read_jsonl(out / "labels.jsonl")
    assert [{k: r[k] for k in rows[0]} for r in labels] == rows
    assert all(isinstance(r["icm_label"], bool) for r in labels)
    assert all(0 <= r["icm_confidence"] <= 1 for r in labels)
    for k in (0, 2):  # the rule: exactly one sentence of each pair is a statement
        assert labels[k]["icm_label"] != labels[k + 1]["icm_label"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples"] == 4 and summary["inconsistencies"] == 0
    assert summary["model_calls"] > 0 and summary["tokens"] > 0
    assert "-> " + str(out / "labels.jsonl") in capsys.readouterr().out
