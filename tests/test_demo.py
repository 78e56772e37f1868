"""`icm demo`, the README's main job, and its generated data set."""

import json
import subprocess
import sys
from collections import Counter

import pytest

from icm.core.consistency import EXACTLY_ONE, constraints
from icm.demo import TEST, TRAIN, demo_split, make_demo_rows
from icm.tasks import get_task


def test_demo_rows_are_balanced_pairs_with_an_exactly_one_rule():
    rows = make_demo_rows(40, seed=3)
    assert len(rows) == 40 and sum(r["label"] for r in rows) == 20
    assert len({r["sentence"] for r in rows}) == 40
    groups = Counter(r["consistency_id"] for r in rows)
    assert set(groups.values()) == {2}
    for r in rows:
        assert r["label"] == r["sentence"].endswith(".")
        assert r["sentence"].endswith("?") != r["other"].endswith("?")
    data = get_task("demo").build(rows)
    cons = constraints("asymmetry", data.examples)
    assert len(cons) == 20 and all(c.allowed == EXACTLY_ONE for c in cons)
    assert make_demo_rows(40, seed=3) == rows and make_demo_rows(40, seed=4) != rows


def test_demo_split_keeps_held_out_sentences_out_of_training():
    train, test = demo_split(TRAIN, TEST, seed=0)
    assert len(train) == TRAIN and len(test) == TEST
    seen = {r["sentence"] for r in train}
    assert not seen & {r["sentence"] for r in test}
    assert not seen & {r["other"] for r in test}


CLAIMS, HELD_OUT = 12, 16


@pytest.mark.slow
def test_icm_demo_end_to_end(tmp_path):
    """The real default model labels a demo set (smaller than the README's 20 + 32 claims, the
    same path); the accuracies are printed and saved."""
    out = tmp_path / "demo"
    size = ["--claims", str(CLAIMS), "--held-out", str(HELD_OUT)]
    r = subprocess.run(
        [sys.executable, "-m", "icm", "demo", "--out", str(out), "--no-progress", *size],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for title in ("zero-shot", "random labels", "bootstrapped few-shot", "gold labels", "ICM"):
        assert title in r.stdout
    # the cheapest baseline beside ICM, and both test-time decodings
    assert "zero-shot + consistency" in r.stdout and "pairs decided jointly" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["examples"] == CLAIMS and summary["inconsistencies"] == 0
    assert f"{CLAIMS} claims to label, {HELD_OUT} held out" in r.stdout
    # The default model holds this concept: ICM recovers most of the gold labels without them.
    assert summary["agreement"] >= 0.8
    result = json.loads((out / "eval.json").read_text())
    assert result["test_claims"] == HELD_OUT
    assert result["methods"]["gold"]["accuracy"] > 0.6
    joint = result["methods"]["zero-shot"]["joint"]
    assert joint["n"] == HELD_OUT and 0 <= joint["accuracy"] <= 1
    assert result["search"]["gold_utility"] is not None
    concept = result["search"]["concept"]
    assert concept["verdict"] in ("holds", "no concept", "too small to tell")
    assert 0 <= concept["p"] <= 1 and concept["text"] in r.stdout
    assert (out / "eval.png").stat().st_size > 0
    again = subprocess.run(
        [sys.executable, "-m", "icm", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "not a demo run" in again.stderr


def test_demo_sizes_are_checked_before_anything_is_written(tmp_path, capsys):
    from icm.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--claims", "7"]) == 2
    assert "--claims 7" in capsys.readouterr().err and not out.exists()
    assert main(["demo", "--out", str(out), "--held-out", "1"]) == 2
    assert not out.exists()


def test_a_demo_out_that_is_a_file_or_a_link_is_refused_untouched(tmp_path, capsys):
    from icm.cli import main

    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    for out in (mine, link):
        assert main(["demo", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a file or a link, not a folder" in err, err
    assert mine.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "link",
        "notes.txt",
    ]
