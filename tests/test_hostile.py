"""Hostile input and faults: nothing a user owns is lost, every bad input is one line.

Each class of fault gets fresh cases here (the corpus of broken data files is test_bad_input.py).
Runs are made with the deterministic stand-in scorer, so these tests exercise the run folder,
the readers and the command line, not the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icm.cli import main
from icm.core.search import SearchConfig
from icm.errors import RunError
from icm.run import Run, load_data, split
from icm.run.config import RunConfig
from icm.run.folder import RunFolder

from .standin import PlantedModel

ICM = Path(sys.executable).parent / "icm"


def claims(n_groups: int = 4, per_group: int = 2) -> list[dict]:
    return [
        {
            "question": f"Question {g}?",
            "choice": f"Answer {k} to question {g}.",
            "label": k == 0,
            "consistency_id": g,
        }
        for g in range(n_groups)
        for k in range(per_group)
    ]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def planted(cfg: RunConfig) -> PlantedModel:
    _, data = load_data(cfg)
    return PlantedModel({ex.prompt: int(g) for ex, g in zip(data.examples, data.gold, strict=True)})


@pytest.fixture
def done(tmp_path) -> tuple[Path, Path]:
    """A finished run (stand-in model) and its data file."""
    data = write_rows(tmp_path / "data.jsonl", claims())
    cfg = RunConfig(data=str(data), iterations=6)
    run = Run.create(cfg, tmp_path / "run")
    run.execute(planted(cfg))
    return run.path, data


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("icm: "), (err, out)
    assert "Traceback" not in err
    return err


# -- 1. no command destroys what it did not create -------------------------------------------------
def test_overwrite_refuses_a_folder_icm_did_not_make(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    data = write_rows(tmp_path / "d.jsonl", claims())
    assert main(["run", "--data", str(data), "--out", str(mine), "--overwrite"]) == 2
    assert "not a run folder icm made" in one_line(capsys)
    assert tree(mine) == {"thesis.tex": b"years of work"}


def test_overwrite_never_replaces_the_data_it_reads(done, capsys):
    run, _ = done
    data = run / "labels.jsonl"  # a run's labels as the data of a new run into the same folder
    before = tree(run)
    assert main(["run", "--data", str(data), "--out", str(run), "--overwrite"]) == 2
    assert "an input of this run" in one_line(capsys)
    assert tree(run) == before


@pytest.mark.parametrize("where", ["run", "parent", "labels", "config", "data"])
def test_export_report_and_eval_never_write_over_the_run_or_its_data(done, where, capsys):
    run, data = done
    target = {
        "run": run,
        "parent": run.parent,
        "labels": run / "labels.jsonl",
        "config": run / "config.json",
        "data": data,
    }[where]
    before, data_before = tree(run), data.read_bytes()
    export = ["export", str(run), "--format", "labels", "--out", str(target), "--overwrite"]
    assert main(export) == 2
    one_line(capsys)
    assert main(["report", str(run), "--out", str(target), "--overwrite"]) == 2
    one_line(capsys)
    assert tree(run) == before and data.read_bytes() == data_before


def test_outputs_refuse_a_users_file_unless_asked(done, tmp_path, capsys):
    run, _ = done
    page = tmp_path / "notes.html"
    page.write_text("my notes")
    assert main(["report", str(run), "--out", str(page)]) == 2
    assert "--overwrite" in one_line(capsys)
    assert page.read_text() == "my notes"
    assert main(["report", str(run), "--out", str(page), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(page)]) == 0  # now it is icm's own report
    folder = tmp_path / "somebody"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    out = ["export", str(run), "--format", "sft", "--out", str(folder), "--overwrite"]
    assert main(out) == 2
    assert "a folder icm did not write" in one_line(capsys)
    assert (folder / "keep.txt").read_text() == "x"


def test_eval_out_must_be_a_folder_and_not_the_data(done, capsys):
    run, data = done
    before = data.read_bytes()
    argv = ["eval", "--run", str(run), "--test", str(data), "--out", str(data)]
    assert main(argv) == 2
    assert "is a file" in one_line(capsys)
    assert data.read_bytes() == before


def test_finetune_never_replaces_a_folder_it_did_not_train(done, tmp_path, capsys):
    run, _ = done
    models = tmp_path / "models"
    models.mkdir()
    (models / "weights.bin").write_bytes(b"\0" * 10)
    assert main(["finetune", str(run), "--out", str(models), "--overwrite"]) == 2
    assert "a folder icm did not write" in one_line(capsys)
    assert (models / "weights.bin").exists()


# -- 2. every option checked before the first write ------------------------------------------------
BAD_OPTIONS = [
    (["--alpha", "nan"], "--alpha"),
    (["--alpha", "-1"], "--alpha"),
    (["--t0", "inf"], "--t0"),
    (["--tmin", "0"], "--tmin"),
    (["--tmin", "50"], "--tmin"),
    (["--beta", "-0.5"], "--beta"),
    (["--initial", "-2"], "--initial"),
    (["--fix-steps", "-1"], "--fix-steps"),
    (["--group-weight", "0"], "--group-weight"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1" * 5000], "--seed"),
    (["--limit", "0"], "--limit"),
    (["--limit", "-3"], "--limit"),
    (["--iterations", "-5"], "--iterations"),
    (["--batch-size", "1"], "--batch-size"),
    (["--threads", "0"], "--threads"),
    (["--timeout", "nan"], "--timeout"),
    (["--concurrency", "0"], "--concurrency"),
    (["--chains", "0"], "--chains"),
    (["--workers", "-1"], "--workers"),
    (["--clock", "acepted"], "'iteration', 'accepted'"),
    (["--score", "sum"], "sum-logprob"),
    (["--backend", "vllm"], "transformers"),
    (["--dtype", "fp8"], "float32"),
    (["--device", "cuda:7"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--backend", "openai", "--base-url", "http://me:secret@127.0.0.1:1/v1"], "credentials"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:1/v1?api_key=x"], "credentials"),
    (["--backend", "openai"], "--base-url"),
    (["--base-url", "http://127.0.0.1:1/v1"], "--backend openai"),
]


@pytest.mark.parametrize("extra,named", BAD_OPTIONS, ids=lambda x: str(x)[:40])
def test_a_bad_option_is_one_line_and_writes_nothing(extra, named, tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", claims())
    out = tmp_path / "run"
    argv = ["run", "--data", str(data), "--out", str(out), "--no-progress", *extra]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a choice that is not one
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert named in err
    assert not out.exists()


def test_a_hand_edited_config_is_checked_on_resume(done):
    run, _ = done
    cfg = json.loads((run / "config.json").read_text())
    cfg["search"]["alpha"] = -3
    (run / "config.json").write_text(json.dumps(cfg))
    before = tree(run)
    r = run_cli("run", "--resume", str(run))  # as a user runs it: its own process and stderr
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("icm: "), r
    assert "config.json" in r.stderr and "--alpha" in r.stderr
    assert tree(run) == before


# -- 3. a resume checks what it resumes ------------------------------------------------------------
def test_resume_refuses_edited_or_grown_data(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", claims())
    cfg = RunConfig(data=str(data), iterations=4)
    model = planted(cfg)
    Run.create(cfg, tmp_path / "run").execute(model)
    rows = claims()
    rows[3]["choice"] = "An edited answer."
    write_rows(data, rows)
    with pytest.raises(RunError, match="the data changed since the run started"):
        Run.open(tmp_path / "run").execute(model)
    write_rows(data, claims(5))
    with pytest.raises(RunError, match="8 rows then, 10 now"):
        Run.open(tmp_path / "run").execute(model)


def test_resume_refuses_another_model(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", claims())
    cfg = RunConfig(data=str(data), iterations=4)
    model = planted(cfg)
    model.identity = {"model": "m", "weights": "aaaa"}
    Run.create(cfg, tmp_path / "run").execute(model)
    model.identity = {"model": "m", "weights": "bbbb"}  # a new checkpoint under the old name
    with pytest.raises(RunError, match="the model changed"):
        Run.open(tmp_path / "run").execute(model)


def test_the_batch_split_is_decided_once(tmp_path):
    """A backend that now reports another context length does not re-split a run."""
    data = write_rows(tmp_path / "d.jsonl", claims(6))
    cfg = RunConfig(data=str(data), iterations=2)
    model = planted(cfg)
    model.count_tokens = lambda texts: [len(t.split()) for t in texts]
    model.max_context = 40  # about two groups per batch
    run = Run.create(cfg, tmp_path / "run")
    first = run.execute(model)
    plan = (tmp_path / "run" / "plan.json").read_bytes()
    assert first["batches"] > 1
    model.max_context = None  # the server now says nothing, or something else
    again = Run.open(tmp_path / "run").execute(model)
    assert again["batches"] == first["batches"]
    assert (tmp_path / "run" / "plan.json").read_bytes() == plan


def test_resume_with_more_iterations_extends_every_batch(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", claims(6))
    cfg = RunConfig(data=str(data), iterations=3, batch_size=4)
    model = planted(cfg)
    Run.create(cfg, tmp_path / "run").execute(model)
    run = Run.open(tmp_path / "run")
    run.cfg.iterations = 5
    summary = run.execute(model)
    assert summary["batches"] == 3 and summary["iterations"] == 5 * 3
    for trace in (tmp_path / "run").glob("batches/*/chain-0/trace.jsonl"):
        assert [json.loads(x)["n"] for x in trace.read_text().splitlines()] == [1, 2, 3, 4, 5]


# -- 4. strict readers, valid writers --------------------------------------------------------------
def test_a_bad_line_in_the_middle_of_labels_is_an_error_naming_the_line(done, tmp_path, capsys):
    run, _ = done
    lines = (run / "labels.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (run / "labels.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "x.jsonl"
    assert main(["export", str(run), "--format", "labels", "--out", str(out)]) == 2
    assert "labels.jsonl: line 3" in one_line(capsys)
    assert not out.exists()


def test_a_bad_line_in_the_middle_of_a_trace_is_an_error(done, capsys):
    run, _ = done
    trace = run / "batches" / "000" / "chain-0" / "trace.jsonl"
    lines = trace.read_text().splitlines()
    lines[1] = "{not json"
    trace.write_text("\n".join(lines) + "\n")
    assert main(["report", str(run)]) == 2
    assert "trace.jsonl: line 2" in one_line(capsys)


def test_line_separators_inside_json_strings_are_legal(tmp_path):
    rows = claims()
    rows[0]["choice"] = "Paris\u2028is\u0085the capital."
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _, loaded = load_data(RunConfig(data=str(data)))
    assert len(loaded) == 8 and "\u2028is\u0085" in loaded.examples[0].prompt


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "12", "true"])
def test_a_claim_must_be_text(value, tmp_path, capsys):
    lines = [json.dumps(r) for r in claims()]
    lines[1] = lines[1].replace('"Answer 1 to question 0."', value)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert "d.jsonl: row 2" in err
    assert not (tmp_path / "r").exists()


def test_every_json_file_of_a_run_parses_strictly(done):
    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))

    run, _ = done
    main(["report", str(run)])
    for path in run.rglob("*.json*"):
        text = path.read_text()
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                strict(line)
        else:
            strict(text)


# -- 5. special and huge inputs --------------------------------------------------------------------
def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(ICM), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "huge", "unreadable"])
def test_special_files_are_one_line_with_no_hang(kind, tmp_path):
    if kind == "fifo":
        data = tmp_path / "pipe.jsonl"
        os.mkfifo(data)
    elif kind == "dev-zero":
        data = Path("/dev/zero")
    elif kind == "folder":
        data = tmp_path / "folder.jsonl"
        data.mkdir()
    elif kind == "huge":
        data = tmp_path / "huge.jsonl"
        with open(data, "wb") as f:
            f.truncate(5 * 2**30)  # sparse: 5 GiB that take no disk
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads every folder")
        folder = tmp_path / "locked"
        folder.mkdir()
        data = folder / "d.jsonl"
        write_rows(data, claims())
        folder.chmod(0)
    out = tmp_path / "r"
    p = run_cli("run", "--data", str(data), "--out", str(out), "--no-progress")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert str(data) in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("field", ["consistency_id", "choice", "label"])
def test_a_5000_digit_number_is_one_line(field, tmp_path, capsys):
    lines = [json.dumps(r) for r in claims()]
    row = claims()[1]
    row[field] = 0
    lines[1] = json.dumps(row).replace(f'"{field}": 0', f'"{field}": ' + "7" * 5000)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert "row 2" in err and len(err) < 400


# -- 6. custom task specs stay gold-blind ----------------------------------------------------------
SPECS = {
    "gold in template": ("template: 'Q: {question} A: {choice} gold={label}\\nI think'", "label"),
    "gold as key": (
        "template: '{choice}\\nI think'\ngroup: consistency_id\n"
        "consistency: {rule: equivalence, key: label}",
        "gold-label",
    ),
    "gold as group": ("template: '{choice}\\nI think'\ngroup: label", "gold-label"),
    "allocating format": ("template: '{choice:>1999999999}\\nI think'", "plain {field}"),
    "attribute access": ("template: '{choice.__class__}\\nI think'", "plain {field}"),
    "index access": ("template: '{choice[0]}\\nI think'", "plain {field}"),
    "conversion": ("template: '{choice!r}\\nI think'", "plain {field}"),
    "same label words": (
        "template: '{choice}\\nI think'\nlabel_words: [' True', 'true']",
        "label_words",
    ),
    "empty label word": (
        "template: '{choice}\\nI think'\nlabel_words: ['', ' Yes']",
        "label_words",
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_custom_specs_are_refused(name, tmp_path, capsys):
    text, named = SPECS[name]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text + "\n")
    data = write_rows(tmp_path / "d.jsonl", claims())
    argv = ["run", "--task", str(spec), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = one_line(capsys)
    assert "spec.yaml" in err and named in err
    assert not (tmp_path / "r").exists()


# -- 7. group ids keep their type ------------------------------------------------------------------
@pytest.mark.parametrize("ids", [(1, 1.0), (1, True), ("1", 1), (1.5, 1.5)])
def test_group_ids_of_mixed_or_odd_types_are_refused(ids, tmp_path, capsys):
    rows = claims(2)
    for r in rows:
        r["consistency_id"] = ids[0] if r["consistency_id"] == 0 else ids[1]
    data = write_rows(tmp_path / "d.jsonl", rows)
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "(the group)" in one_line(capsys)


# -- 9. one process per run folder -----------------------------------------------------------------
def test_a_second_process_on_a_run_folder_is_refused(done):
    run, _ = done
    held = RunFolder(run)
    held.lock()
    try:
        p = run_cli("run", "--resume", str(run), "--no-progress")
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert f"in use by icm process {os.getpid()}" in p.stderr
    finally:
        held.unlock()


# -- 11. batches and leftovers ---------------------------------------------------------------------
def test_a_last_batch_of_one_row_joins_its_neighbour(tmp_path):
    rows = claims(3) + [{**claims(1)[0], "consistency_id": 99}]
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = RunConfig(data=str(data), batch_size=2, iterations=2)
    model = planted(cfg)
    _, loaded = load_data(cfg)
    parts = split(loaded, cfg, model)
    assert [len(p) for p in parts] == [2, 2, 3]
    summary = Run.create(cfg, tmp_path / "run").execute(model)
    assert summary["examples"] == 7


def test_leftover_labels_obey_the_rule_and_the_summary_counts_every_row(tmp_path):
    """Comparisons (exactly one of each pair True) with too few iterations to label them all:
    the labels filled in afterwards are made consistent, and summary.json counts all rows."""
    rows = []
    for g in range(10):
        a, b = f"answer a{g}", f"answer b{g}"
        for first, second, y in ((a, b, g % 2 == 0), (b, a, g % 2 == 1)):
            rows.append(
                {
                    "question": f"q{g}",
                    "choice": first,
                    "choice_2": second,
                    "label": y,
                    "consistency_id": g,
                }
            )
    data = write_rows(tmp_path / "d.jsonl", rows)
    cfg = RunConfig(
        task="alpaca", data=str(data), iterations=1, search=SearchConfig.paper(initial=2)
    )

    class Stubborn(PlantedModel):
        """Says True to everything: argmax leftovers would break every pair."""

        def _logprobs(self, prompt, demos, labels):
            return np.log([0.1, 0.9])

    model = Stubborn({})
    summary = Run.create(cfg, tmp_path / "run").execute(model)
    text = (tmp_path / "run" / "labels.jsonl").read_text()
    labelled = [json.loads(x) for x in text.splitlines()]
    assert summary["searched"] < len(rows)
    by_group: dict[int, list[bool]] = {}
    for r in labelled:
        by_group.setdefault(r["consistency_id"], []).append(r["icm_label"])
    assert all(sorted(v) == [False, True] for v in by_group.values())
    assert summary["inconsistencies"] == 0
