"""`icm export`: TRL column layouts, pairs from claims and from comparisons, containers, errors.

Run folders are built directly (config.json + labels.jsonl, as a finished run writes them): the
exports read nothing else. ICM labels are set against gold on purpose, so a leak of gold shows.
"""

import json

import pytest

from icm import files
from icm.cli import main
from icm.export import export_run, load_labelled, records
from icm.run.config import RunConfig
from icm.tasks import get_task

from .conftest import shared

# The standard (not conversational) dataset types of TRL's "Dataset formats" guide, with the
# column types it shows: prompt-completion (SFT), unpaired preference (KTO), explicit-prompt
# preference (DPO, reward modelling); `messages` is the conversational language-modeling type.
TRL = {
    "sft": {"prompt": str, "completion": str},
    "sft-chat": {"messages": list},
    "kto": {"prompt": str, "completion": str, "label": bool},
    "dpo": {"prompt": str, "chosen": str, "rejected": str},
    "rm": {"prompt": str, "chosen": str, "rejected": str},
}

CLAIMS = [  # (group, claim, gold, ICM label)
    (0, "Paris is the capital.", 1, True),
    (0, "Lyon is the capital.", 0, True),  # ICM disagrees with gold
    (0, "Nice is the capital.", 0, False),
    (0, "Paris, a city in France.", 1, False),  # ICM disagrees with gold
    (1, "Water boils at 100 C at sea level.", 1, True),
    (1, "Water boils at 50 C at sea level.", 0, True),  # a group with one label only
]
QUESTIONS = {0: "What is the capital of France?", 1: "When does water boil?"}


def make_run(folder, task, rows, labels, label_field="label"):
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "config.json", RunConfig(task=task, data="unused.json").to_json())
    files.write_jsonl(
        folder / "labels.jsonl",
        (
            {**row, "icm_label": y, "icm_logodds": 1.0 if y else -1.0, "icm_searched": k % 2 == 0}
            for k, (row, y) in enumerate(zip(rows, labels, strict=True))
        ),
    )
    return folder


@pytest.fixture
def claims_run(tmp_path):
    rows = [
        {"question": QUESTIONS[g], "choice": c, "label": gold, "consistency_id": g}
        for g, c, gold, _ in CLAIMS
    ]
    return make_run(tmp_path / "claims", "truthfulqa", rows, [y for *_, y in CLAIMS])


def comparison_rows():
    """Two answer pairs, each in both orders (as the preference data sets hold them)."""
    q = "Is the earth flat?"
    a, b, c, d = "No, it is round.", "Yes.", "No, roughly a sphere.", "It is a disc."
    return [
        {"question": q, "choice": a, "choice_2": b, "label": True, "consistency_id": 0},
        {"question": q, "choice": b, "choice_2": a, "label": False, "consistency_id": 0},
        {"question": q, "choice": c, "choice_2": d, "label": True, "consistency_id": 1},
        {"question": q, "choice": d, "choice_2": c, "label": False, "consistency_id": 1},
    ]


def check_schema(fmt, recs):
    want = TRL[fmt]
    for rec in recs:
        assert set(rec) == set(want), rec
        for name, kind in want.items():
            assert type(rec[name]) is kind, (name, rec[name])


@pytest.mark.parametrize("fmt", sorted(TRL))
def test_records_follow_trl_columns(claims_run, fmt):
    check_schema(fmt, records(load_labelled(claims_run), fmt))


def test_sft_prompt_is_the_icm_prompt_and_completion_the_icm_label(claims_run):
    recs = records(load_labelled(claims_run), "sft")
    task = get_task("truthfulqa")
    for rec, (g, claim, _, y) in zip(recs, CLAIMS, strict=True):
        assert rec["prompt"] == task.template.format(question=QUESTIONS[g], choice=claim)
        assert rec["prompt"].endswith("I think this claim is")
        assert rec["completion"] == (" True" if y else " False")  # ICM's label, never gold
    chat = records(load_labelled(claims_run), "sft-chat")
    assert chat[1]["messages"] == [
        {"role": "user", "content": recs[1]["prompt"]},
        {"role": "assistant", "content": "True"},
    ]


def test_kto_completion_is_the_claim_and_label_the_icm_label(claims_run):
    recs = records(load_labelled(claims_run), "kto")
    for rec, (g, claim, _, y) in zip(recs, CLAIMS, strict=True):
        assert rec["prompt"] == f"Question: {QUESTIONS[g]}\nClaim:"  # TRL: no trailing space
        assert rec["completion"] == " " + claim
        assert rec["label"] is y


def test_pairs_from_claim_groups_pair_true_with_false_of_the_same_question(claims_run):
    data = load_labelled(claims_run)
    recs = records(data, "dpo")
    pairs = {(r["chosen"].strip(), r["rejected"].strip()) for r in recs}
    true = [c for g, c, _, y in CLAIMS if g == 0 and y]
    false = [c for g, c, _, y in CLAIMS if g == 0 and not y]
    assert pairs == {(t, f) for t in true for f in false}  # group 1 has no False claim
    assert len(recs) == 4
    assert data.skipped == {"groups with only one label": 1}
    assert records(load_labelled(claims_run), "rm") == recs


def test_pairs_from_comparisons_use_the_icm_verdict(tmp_path):
    rows = comparison_rows()
    # Pair 0: consistent, and against gold (ICM prefers "Yes."). Pair 1: contradictory.
    run = make_run(tmp_path / "cmp", "truthfulqa-preference", rows, [False, True, True, True])
    data = load_labelled(run)
    recs = records(data, "dpo")
    assert recs == [
        {
            "prompt": "Question: Is the earth flat?\nAnswer 1:",
            "chosen": " Yes.",
            "rejected": " No, it is round.",
        }
    ]
    assert data.skipped == {"pairs labelled alike in both orders": 1}
    kto = records(load_labelled(run), "kto")
    assert [(r["completion"], r["label"]) for r in kto] == [
        (" Yes.", True),
        (" No, it is round.", False),
    ]


def test_gold_never_exported(tmp_path):
    """The task's gold field is dropped, whatever its name; the labels format keeps the rest."""
    spec = tmp_path / "task.yaml"
    spec.write_text(
        'name: t\ntemplate: "Q: {question}\\nA: {choice}\\nI think this claim is"\n'
        "group: consistency_id\nlabel: gold\n"
    )
    rows = [
        {"question": "q", "choice": f"c{k}", "gold": k % 2, "consistency_id": 0, "note": "n"}
        for k in range(4)
    ]
    run = make_run(tmp_path / "run", str(spec), rows, [True, True, False, False])
    for fmt in ("sft", "sft-chat", "kto", "dpo", "labels"):
        for rec in records(load_labelled(run), fmt):
            assert "gold" not in json.dumps(rec), (fmt, rec)
    labels = records(load_labelled(run), "labels")
    assert labels[0] == {"question": "q", "choice": "c0", "consistency_id": 0, "note": "n"} | {
        "icm_label": True
    }


def test_searched_only_keeps_the_searched_rows(claims_run):
    data = load_labelled(claims_run, searched_only=True)  # make_run marks rows 0, 2, 4 searched
    assert [r["choice"] for r in data.rows] == [CLAIMS[k][1] for k in (0, 2, 4)]
    assert data.labels == [CLAIMS[k][3] for k in (0, 2, 4)]


@pytest.mark.parametrize("name", ["out.jsonl", "out.json", "out.parquet", "out_hf"])
def test_containers_round_trip(claims_run, tmp_path, name):
    out = tmp_path / name
    n, _ = export_run(claims_run, "sft-chat", out)
    want = records(load_labelled(claims_run), "sft-chat")
    assert n == len(want)
    if name.endswith(".jsonl"):
        got = files.read_jsonl(out)
    elif name.endswith(".json"):
        got = json.loads(out.read_text())
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        got = pq.read_table(out).to_pylist()
    else:
        import datasets

        got = datasets.load_from_disk(str(out)).to_list()
        assert not list(tmp_path.glob(".out_hf*"))  # no temporary folder left behind
    assert got == want


def test_cli_export_and_its_errors(claims_run, tmp_path, capsys):
    out = tmp_path / "dpo.jsonl"
    assert main(["export", str(claims_run), "--format", "dpo", "--out", str(out)]) == 0
    assert "4 dpo records" in capsys.readouterr().out
    before = out.read_text()
    # An existing output is kept.
    assert main(["export", str(claims_run), "--format", "sft", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == before
    # Not a run folder.
    assert main(["export", str(tmp_path), "--format", "sft", "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    # A bad label names the file, the row and the field.
    lines = (claims_run / "labels.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "icm_label": "yes"})
    (claims_run / "labels.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["export", str(claims_run), "--format", "sft", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icm: ") and "labels.jsonl: row 2: field 'icm_label'" in err
    assert not (tmp_path / "y").exists()
    # A missing field names its line in labels.jsonl, also when only searched rows are kept.
    lines[1] = json.dumps({**json.loads(lines[1]), "icm_label": True})
    lines[4] = json.dumps({k: v for k, v in json.loads(lines[4]).items() if k != "choice"})
    (claims_run / "labels.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["export", str(claims_run), "--format", "sft", "--out", str(tmp_path / "z")]
    assert main([*argv, "--searched-only"]) == 2
    assert "labels.jsonl: row 5: missing field 'choice'" in capsys.readouterr().err


def test_no_pairs_is_an_error(tmp_path, capsys):
    rows = [{"question": "q", "choice": f"c{k}", "consistency_id": 0} for k in range(3)]
    run = make_run(tmp_path / "run", "truthfulqa", rows, [True, True, True])
    out = tmp_path / "dpo.jsonl"
    assert main(["export", str(run), "--format", "dpo", "--out", str(out)]) == 2
    assert "no records (1 groups with only one label)" in capsys.readouterr().err
    assert not out.exists()


def test_real_truthfulqa_prompts_match_the_search(tmp_path):
    """On the real data, exported SFT prompts are exactly the prompts the search scores."""
    path = shared("truthfulqa/train.json")
    task = get_task("truthfulqa")
    data = task.load(path).first_groups(40)
    labels = [k % 3 == 0 for k in range(len(data))]
    run = make_run(tmp_path / "run", "truthfulqa", data.rows, labels)
    recs = records(load_labelled(run), "sft")
    assert [r["prompt"] for r in recs] == [ex.prompt for ex in data.examples]
    dpo = records(load_labelled(run), "dpo")
    for r in dpo:
        assert r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nClaim:")
    groups = {}
    for row, y in zip(data.rows, labels, strict=True):
        groups.setdefault(row["consistency_id"], [0, 0])[int(y)] += 1
    assert len(dpo) == sum(f * t for f, t in groups.values())
