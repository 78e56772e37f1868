"""Refusals before any change, and every file icm reads back read as strictly as data: links
where icm writes, edited plans, checkpoint fields of the wrong type, non-finite cached scores,
a context budget nothing fits. Each refusal is one line and leaves every file as it was."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from icm import files
from icm.backends.caching import CachingModel, CallCache
from icm.errors import ConfigError, IcmError, LinkError, RunError
from icm.run.driver import Run
from icm.run.folder import check_output

from .test_trust import setup


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with its content's digest (a link: where it points)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "special"
    return out


@pytest.fixture
def made(tmp_path):
    """A finished two-batch run on the stand-in scorer, and its config and model."""
    cfg, model = setup(tmp_path, iterations=3, batch_size=6)
    Run.create(cfg, tmp_path / "run").execute(model)
    return tmp_path / "run", cfg, model


LINKED = [
    "labels.jsonl",
    "summary.json",
    "plan.json",
    "batches/000/chain-0/state.json",
    "batches/001/chain-0/final.json",
    "batches/001",
    "batches/000/chain-0",
]


@pytest.mark.parametrize("name", LINKED)
def test_overwrite_and_resume_refuse_a_link_before_changing_anything(made, tmp_path, name):
    run, cfg, model = made
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    target = run / name
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
        target.symlink_to(victim, target_is_directory=True)
    else:
        target.unlink()
        target.symlink_to(victim / "precious.txt")
    before, outside = snapshot(run), snapshot(victim)
    with pytest.raises(LinkError) as e:
        Run.create(cfg, run, overwrite=True)
    assert "nothing was changed" in str(e.value) and "\n" not in str(e.value)
    assert snapshot(run) == before and snapshot(victim) == outside
    if name != "plan.json":
        with pytest.raises(LinkError):
            Run.open(run).execute(model)
        assert snapshot(run) == before and snapshot(victim) == outside


@pytest.mark.parametrize("kind", ["folder", "pipe"])
@pytest.mark.parametrize("name", ["summary.json", "batches/000/chain-0/trace.jsonl"])
def test_a_folder_or_pipe_where_icm_writes_a_file_is_refused_first(made, kind, name):
    """A resume would append to the pipe and wait forever; --overwrite would replace it."""
    run, cfg, model = made
    (run / name).unlink()
    if kind == "folder":
        (run / name).mkdir()
        (run / name / "notes.txt").write_text("mine")
    else:
        os.mkfifo(run / name)
    before = snapshot(run)
    message = f"{name}: a link, a folder or a special file where"
    with pytest.raises(LinkError, match=message):
        Run.create(cfg, run, overwrite=True)
    with pytest.raises(LinkError, match=message):
        Run.open(run).execute(model)
    assert snapshot(run) == before


def test_an_output_that_is_a_link_is_refused_even_with_overwrite(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("mine")
    link = tmp_path / "eval.md"
    link.symlink_to(real)
    for overwrite in (False, True):
        with pytest.raises(LinkError, match="is a link"):
            check_output(link, overwrite, ours=True)
    assert real.read_text() == "mine"


# -- edited plans ---------------------------------------------------------------------------------
def edit_plan(run: Path, change) -> None:
    plan = json.loads((run / "plan.json").read_text())
    change(plan)
    (run / "plan.json").write_text(json.dumps(plan))


def swap(p: dict) -> None:
    p["batches"][0], p["batches"][1] = p["batches"][1], p["batches"][0]


def swap_all(p: dict) -> None:
    swap(p)
    p["batch_hashes"].reverse()


@pytest.mark.parametrize(
    ("change", "part"),
    [
        (swap, "rows of batch 1 are not those it was planned with"),
        (swap_all, "saved for other rows"),
        (lambda p: p.update(batches=[]), "non-empty list"),
        (lambda p: p.update(batches=[[0, 1, 2, 3, 4, 5], []]), "non-empty list"),
        (lambda p: p["batches"][0].reverse(), "ascending order"),
        (lambda p: p["batches"][0].__setitem__(0, "0"), "row numbers"),
        (lambda p: p["batches"][1].__setitem__(-1, 99), "do not cover"),
        (lambda p: p.update(batch_hashes=["x"]), "one fingerprint per batch"),
        (lambda p: p.update(data=[]), "must be objects"),
        (lambda p: p.update(settings=5), "'settings'"),
    ],
)
def test_an_edited_plan_is_refused_on_resume(made, change, part):
    run, _, model = made
    edit_plan(run, change)
    before = snapshot(run)
    with pytest.raises(RunError) as e:
        Run.open(run).execute(model)
    assert part in str(e.value) and "\n" not in str(e.value)
    assert snapshot(run) == before


# -- checkpoint fields ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("utility", "1.5"),
        ("utility", None),
        ("utility", True),
        ("inconsistencies", -1),
        ("inconsistencies", 1.5),
        ("best_utility", "high"),
        ("best_complete", [1]),
        ("iteration", "3"),
        ("seconds", "fast"),
        ("labels", [0, 1]),
        ("rows_hash", "0000"),
        ("rng", {"bit_generator": "MT19937"}),
    ],
)
def test_a_checkpoint_field_of_the_wrong_type_is_one_line(made, field, value):
    run, _, model = made
    path = run / "batches" / "000" / "chain-0" / "state.json"
    state = json.loads(path.read_text())
    state[field] = value
    path.write_text(json.dumps(state))
    before = snapshot(run)
    with pytest.raises(RunError) as e:
        Run.open(run).execute(model)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert snapshot(run) == before


# -- the call cache -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stored",
    [
        "[[NaN, -1.0], [-1.0, -2.0]]",
        "[[-1.0], [-1.0, -2.0]]",
        '"text"',
        "[[5.0, -1.0], [-1.0, -2.0]]",
        "[[-1.0, -2.0]]",
        "[[-Infinity, -1.0], [-1.0, -2.0]]",
        "[[true, -1.0], [-1.0, -2.0]]",
    ],
)
def test_a_cached_score_that_icm_did_not_write_is_refused(tmp_path, stored):
    _, model = setup(tmp_path)
    model.identity = {"name": "planted"}
    path = tmp_path / "calls.sqlite"
    cached = CachingModel(model, CallCache(path))
    prompts = list(model.planted)[:2]
    first = cached.loo_logprobs(prompts, [0, 1])
    np.testing.assert_array_equal(cached.loo_logprobs(prompts, [0, 1]), first)  # a hit
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE calls SET top = ?", (stored,))
    db.close()
    with pytest.raises(IcmError) as e:
        cached.loo_logprobs(prompts, [0, 1])
    assert str(path) in str(e.value) and "--call-cache" in str(e.value)


# -- a context budget nothing fits ----------------------------------------------------------------
def test_a_context_budget_that_cannot_hold_one_group_is_refused_before_writing(tmp_path):
    cfg, model = setup(tmp_path, context_tokens=20)
    model.count_tokens = lambda texts: [len(t.split()) for t in texts]  # type: ignore[method-assign]
    with pytest.raises(ConfigError) as e:
        Run.create(cfg, tmp_path / "run").execute(model)
    text = str(e.value)
    assert "cannot hold one group" in text and "--context-tokens" in text, text
    assert not (tmp_path / "run" / "plan.json").exists()
    with pytest.raises(ConfigError, match="cannot hold one group"):
        from icm.run.plan import prepare

        prepare(cfg, model)
    assert files.read_json(tmp_path / "run" / "config.json")  # only what create wrote


# -- summary.json as the report and eval read it -------------------------------------------------
def test_every_field_of_an_edited_summary_is_checked_by_the_report(made, capsys):
    from icm.cli import main
    from icm.run.readback import LATER, SUMMARY

    run, *_ = made
    good = json.loads((run / "summary.json").read_text())
    edits = [(k, "text") for k in good]
    edits += [(f"per_batch.{k}", "text") for k in ("utility", "examples", "per_chain")]
    edits += [(f"concept.{k}", [1]) for k in good["concept"]]
    refused = set()
    for where, value in edits:
        s = json.loads(json.dumps(good))
        part, _, key = where.rpartition(".")
        target = s["per_batch"][0] if part == "per_batch" else s["concept"] if part else s
        target[key] = value
        (run / "summary.json").write_text(json.dumps(s))
        rc = main(["report", str(run), "--out", str(run / "report.html")])
        out, err = capsys.readouterr()
        assert rc in (0, 2) and "Traceback" not in err, (where, value, err)
        if rc == 2:
            refused.add(where)
            assert err.count("\n") == 1 and "summary.json" in err, (where, err)
            assert not (run / "report.html").exists()
        (run / "report.html").unlink(missing_ok=True)
    checked = {k for k in good if k in SUMMARY or k in LATER and k != "diagnosis"}
    assert checked <= refused and {"per_batch.utility", "concept.p"} <= refused


# -- labels.jsonl as export, the report, eval and training read it -------------------------------
LABEL_EDITS = [
    ("icm_label", "yes", "'icm_label' must be true or false"),
    ("icm_label", 1, "'icm_label' must be true or false"),
    ("icm_confidence", "high", "'icm_confidence' must be a number from 0 to 1"),
    ("icm_confidence", 7.0, "'icm_confidence' must be a number from 0 to 1"),
    ("icm_logodds", None, "'icm_logodds' must be a number"),
    ("icm_searched", "no", "'icm_searched' must be true or false"),
    ("icm_batch", -3, "'icm_batch' must be a batch number"),
    ("icm_fixed", 1, "'icm_fixed' must be true or false"),
]
READERS = {
    "export": ["export", "RUN", "--format", "label-studio", "--out", "OUT/tasks.json"],
    "report": ["report", "RUN", "--out", "OUT/report.html"],
    "eval": ["eval", "--run", "RUN", "--out", "OUT"],
    "finetune": ["finetune", "RUN", "--out", "OUT/model", "--max-steps", "1"],
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("field, value, message", LABEL_EDITS)
def test_an_edited_labels_file_is_one_line_for_every_reader(
    made, capsys, reader, field, value, message
):
    """Each ICM field is read back as strictly as the data: a type icm never writes is refused
    before anything is written, by every command that reads labels.jsonl."""
    from icm.cli import main

    run, *_ = made
    rows = files.read_jsonl(run / "labels.jsonl")
    rows[2][field] = value
    files.write_jsonl(run / "labels.jsonl", rows)
    out = run.parent / "out"
    out.mkdir()
    argv = [a.replace("RUN", str(run)).replace("OUT", str(out)) for a in READERS[reader]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"labels.jsonl: row 3: field {message}" in err, err
    assert not list(out.iterdir())


# -- a search's trace, as the report and a resume read it ---------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("U", "text", "'U' must be a number"),
        ("U", None, "'U' must be a number"),
        ("T", [1], "'T' must be a number"),
        ("n", "x", "'n' must be a count"),
        ("agreement", [1], "'agreement' must be a number"),
        ("accepted", "yes", "'accepted' must be true or false"),
        ("labelled", -5, "'labelled' must be a count"),
        ("delta", None, None),  # a proposal with no finite change: what icm writes
    ],
)
def test_an_edited_trace_is_one_line_for_the_report_and_a_resume(
    made, capsys, field, value, message
):
    from icm.cli import main

    run, _, model = made
    chain = run / "batches" / "000" / "chain-0"
    rows = files.read_jsonl(chain / "trace.jsonl")
    rows[1][field] = value
    files.write_jsonl(chain / "trace.jsonl", rows)
    report = run.parent / "report.html"
    rc = main(["report", str(run), "--out", str(report)])
    err = capsys.readouterr().err
    if message is None:
        assert rc == 0 and report.exists()
        return
    assert rc == 2 and err.count("\n") == 1, err
    assert f"trace.jsonl: line 2: {message}" in err and not report.exists()
    (chain / "final.json").unlink()  # the search is resumed from its checkpoint
    before = snapshot(run)
    with pytest.raises(RunError, match=f"trace.jsonl: line 2: {message}"):
        Run.open(run).execute(model)
    assert snapshot(run) == before


def test_settling_lines_of_a_trace_are_checked_too(made, capsys):
    from icm.cli import main

    run, *_ = made
    path = run / "batches" / "001" / "chain-0" / "trace.jsonl"
    rows = files.read_jsonl(path)
    last = rows[-1]
    seen = {k: last[k] for k in ("n", "U", "inconsistencies", "labelled", "agreement")}
    settled = {**seen, "polish": 1, "step": "polish", "changed": ["3"]}
    for u, rc in ((last["U"] + 0.1, 0), ("y", 2)):
        files.write_jsonl(path, [*rows, {**settled, "U": u}])
        assert main(["report", str(run), "--out", str(run.parent / f"r{rc}.html")]) == rc
    line = f"trace.jsonl: line {len(rows) + 1}: 'U' must be a number"
    assert line in capsys.readouterr().err and not (run.parent / "r2.html").exists()


# -- outputs that are devices, pipes or sockets ----------------------------------------------------
SPECIAL_OUTPUTS = {
    "export, a datasets folder": ("out", ["export", "RUN", "--format", "sft", "--out", "OUT"]),
    "export, JSON Lines": ("out.jsonl", ["export", "RUN", "--format", "sft", "--out", "OUT"]),
    "export, review CSV": ("out.csv", ["export", "RUN", "--format", "review", "--out", "OUT"]),
    "report": ("out.html", ["report", "RUN", "--out", "OUT"]),
    "eval": ("ev/eval.json", ["eval", "--run", "RUN", "--split-test", "0.5", "--out", "DIR"]),
    "finetune": ("model", ["finetune", "RUN", "--out", "OUT", "--max-steps", "1"]),
}


@pytest.mark.parametrize("command", SPECIAL_OUTPUTS)
def test_a_pipe_where_an_output_goes_is_never_replaced_nor_opened(made, command):
    """Even with --overwrite: as root a rename over a device (/dev/null) succeeds, and opening a
    pipe to see whether icm wrote it would wait forever. A pipe stands in for every special file."""
    import subprocess
    import sys

    run, *_ = made
    name, argv = SPECIAL_OUTPUTS[command]
    pipe = run.parent / name
    pipe.parent.mkdir(exist_ok=True)
    os.mkfifo(pipe)
    args = [a.replace("RUN", str(run)).replace("OUT", str(pipe)) for a in argv]
    args = [a.replace("DIR", str(pipe.parent)) for a in args]
    icm = Path(sys.executable).parent / "icm"
    p = subprocess.run([icm, *args, "--overwrite"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{pipe}: is a device, a pipe or a socket; icm never replaces one" in p.stderr
    assert stat.S_ISFIFO(pipe.lstat().st_mode)


def test_a_write_that_fails_names_the_file_asked_for(tmp_path):
    """Not the temporary file beside it, which the user never named and icm removed."""
    target = tmp_path / "missing" / "report.html"
    with pytest.raises(OSError) as e:
        files.write_text(target, "x")
    assert e.value.filename == str(target) and not list(tmp_path.rglob("*.tmp"))
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    with pytest.raises(IcmError, match="out.json: is a device, a pipe or a socket"):
        files.write_json(fifo, {})


@pytest.mark.parametrize("command", SPECIAL_OUTPUTS)
def test_an_output_under_a_file_is_refused_before_the_work(made, command):
    """The folder an output goes into is checked with the output, not when the work is done."""
    import subprocess
    import sys

    run, *_ = made
    name, argv = SPECIAL_OUTPUTS[command]
    mine = run.parent / "notes.txt"
    mine.write_text("mine")
    where = mine / name
    args = [a.replace("RUN", str(run)).replace("OUT", str(where)) for a in argv]
    args = [a.replace("DIR", str(where.parent)) for a in args]
    icm = Path(sys.executable).parent / "icm"
    p = subprocess.run([icm, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{mine} is a file, not a folder: choose another output" in p.stderr
    assert mine.read_text() == "mine"


def test_overwrite_removes_a_trained_model_only_under_its_own_name(made):
    """batches/NNN/finetuned/ is iterative ICM's; a model folder of another name stays, even
    one icm trained and marked."""
    from icm.files import TRAINED_META

    run, cfg, _ = made
    for name in ("finetuned", "my-model"):
        folder = run / "batches" / "000" / name
        folder.mkdir()
        (folder / TRAINED_META).write_text("{}")
        (folder / "weights.bin").write_text(name)
    Run.create(cfg, run, overwrite=True)
    assert not (run / "batches" / "000" / "finetuned").exists()
    assert (run / "batches" / "000" / "my-model" / "weights.bin").read_text() == "my-model"
