"""`icm export --format label-matrix`: one column per chain, -1 where a chain did not search a row,
read from a real run (several batches and chains, on the stand-in scorer)."""

from __future__ import annotations

import csv
import json

from icm import files
from icm.cli import main
from icm.core.search import SearchConfig
from icm.run import Run

from .standin import PlantedModel
from .test_trust import claims, setup


def run_with_chains(tmp_path):
    # The paper's search with few iterations leaves rows unsearched: those cells abstain.
    cfg, model = setup(
        tmp_path,
        groups=8,
        chains=3,
        batch_size=8,
        iterations=1,
        search=SearchConfig.paper(initial=2),
    )
    Run.create(cfg, tmp_path / "run").execute(model)
    return tmp_path / "run"


def test_label_matrix_has_a_column_per_chain_and_abstains_where_a_chain_did_not_search(tmp_path):
    run = run_with_chains(tmp_path)
    assert (
        main(["export", str(run), "--format", "label-matrix", "--out", str(tmp_path / "L.csv")])
        == 0
    )
    with open(tmp_path / "L.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(claims(8))
    assert list(got[0]) == ["icm_row", "icm_batch", "chain_0", "chain_1", "chain_2"]
    plan = files.read_json(run / "plan.json")["batches"]
    assert len(plan) == 2
    cells = {int(r["icm_row"]): r for r in got}
    seen = set()
    for b, rows in enumerate(plan):
        for c in range(3):
            final = files.read_json(run / "batches" / f"{b:03d}" / f"chain-{c}" / "final.json")
            for k, i in enumerate(rows):
                assert int(cells[i][f"chain_{c}"]) == final["labels"][k]
                assert int(cells[i]["icm_batch"]) == b
                seen.add(final["labels"][k])
    assert seen == {-1, 0, 1}  # abstentions and both labels occur


def test_label_matrix_refuses_an_edited_chain_result(tmp_path, capsys):
    run = run_with_chains(tmp_path)
    final = run / "batches" / "001" / "chain-2" / "final.json"
    saved = json.loads(final.read_text())
    saved["labels"][0] = 2
    final.write_text(json.dumps(saved))
    out = tmp_path / "L.jsonl"
    assert main(["export", str(run), "--format", "label-matrix", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "final.json" in err[0] and "-1, 0 or 1" in err[0]
    assert not out.exists()


def test_label_matrix_of_one_chain_is_its_searched_labels(tmp_path):
    cfg, model = setup(tmp_path, groups=4, iterations=4)
    Run.create(cfg, tmp_path / "run").execute(PlantedModel(model.planted, 0.2, 0.4))
    out = tmp_path / "L.jsonl"
    assert (
        main(["export", str(tmp_path / "run"), "--format", "label-matrix", "--out", str(out)]) == 0
    )
    rows = files.read_jsonl(out)
    final = files.read_json(tmp_path / "run" / "batches" / "000" / "chain-0" / "final.json")
    assert [r["chain_0"] for r in rows] == final["labels"]
    assert all(set(r) == {"icm_row", "icm_batch", "chain_0"} for r in rows)
