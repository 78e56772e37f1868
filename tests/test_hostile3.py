"""Hostile inputs, round 3: outputs that would attack their reader, fixed-labels files that fix
nothing or contradict themselves, and text that would drive the terminal.

Model-free where the model plays no part (the stand-in scorer of tests/standin.py)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from icm import files
from icm.backends.answers import top_list
from icm.cli import main
from icm.demo import make_demo_rows
from icm.errors import DataError, printable
from icm.files import neutral, restore
from icm.run import Run
from icm.run.config import RunConfig
from icm.run.plan import prepare

from .standin import PlantedModel
from .test_trust import setup


# -- CSV injection ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["=1+1", "+A1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=1", "''", "'x", "plain", "-"]
)
def test_neutral_cells_read_as_text_and_restore_exactly(text):
    cell = neutral(text)
    assert not str(cell).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert restore(str(cell)) == text


def test_numbers_stay_numbers():
    assert neutral(-1.5) == -1.5 and neutral(-3) == -3


def test_a_review_csv_holds_no_live_formula_and_comes_back_as_fixed_labels(tmp_path):
    rows = [
        {"question": f"Q{g}?", "choice": text, "label": k == 0, "consistency_id": g}
        for g, pair in enumerate([('=HYPERLINK("http://x")', "+1"), ("@A1", "-5 degrees")])
        for k, text in enumerate(pair)
    ]
    data = tmp_path / "d.jsonl"
    files.write_jsonl(data, rows)
    cfg = RunConfig(data=str(data), iterations=2)
    planted = {ex.prompt: int(g) for ex, g in zip(*_examples(cfg), strict=True)}
    Run.create(cfg, tmp_path / "run").execute(PlantedModel(planted))
    review = tmp_path / "review.csv"
    assert main(["export", str(tmp_path / "run"), "--format", "review", "--out", str(review)]) == 0
    text = review.read_text()
    cells = [c for line in csv.reader(text.splitlines()) for c in line]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))]
    assert "'=HYPERLINK" in text and "'-5 degrees" in text
    with open(review, newline="") as f:
        back = list(csv.DictReader(f))
    for r in back:
        r["human_label"] = "true" if r["choice"] in ('\'=HYPERLINK("http://x")', "'@A1") else ""
    with open(review, "w", newline="") as f:
        w = csv.DictWriter(f, list(back[0]))
        w.writeheader()
        w.writerows(back)
    cfg2 = RunConfig(data=str(data), iterations=2, fixed_labels=str(review))
    prepared = prepare(cfg2, PlantedModel(planted))
    assert sorted(prepared.fixed) == [0, 2] and set(prepared.fixed.values()) == {1}


def _examples(cfg):
    from icm.run.plan import load_data

    _, data = load_data(cfg)
    return data.examples, data.gold


# -- fixed-labels files ----------------------------------------------------------------------------
def _fixed(tmp_path, rows, cfg):
    path = tmp_path / "fixed.jsonl"
    files.write_jsonl(path, rows)
    cfg.fixed_labels = str(path)
    return path


def test_fixed_labels_that_contradict_each_other_are_refused(tmp_path):
    cfg, model = setup(tmp_path)
    claim = {"question": "Question 0?", "choice": "Answer 0 to question 0.", "consistency_id": 0}
    path = _fixed(tmp_path, [{**claim, "human_label": True}, {**claim, "human_label": False}], cfg)
    with pytest.raises(DataError, match=f"{path}: row 2: gives another label"):
        prepare(cfg, model)


def test_a_fixed_labels_file_that_fixes_nothing_is_refused(tmp_path):
    cfg, model = setup(tmp_path)
    claim = {"question": "Question 0?", "choice": "Answer 0 to question 0.", "consistency_id": 0}
    _fixed(tmp_path, [{**claim, "human_label": ""}, {**claim, "human_label": None}], cfg)
    with pytest.raises(DataError, match="'human_label' is empty in every row"):
        prepare(cfg, model)


def test_the_data_file_itself_is_not_a_fixed_labels_file(tmp_path):
    cfg, model = setup(tmp_path)
    cfg.fixed_labels = cfg.data  # gold labels in 'label', no human_label: must fix nothing
    with pytest.raises(DataError, match="no field 'human_label'"):
        prepare(cfg, model)


def test_fixed_labels_that_break_the_rule_are_refused(tmp_path):
    data = tmp_path / "demo.jsonl"
    rows = make_demo_rows(4, seed=0)
    files.write_jsonl(data, rows)
    cfg = RunConfig(task="demo", data=str(data), iterations=1)
    both = [{k: v for k, v in r.items() if k != "label"} | {"human_label": True} for r in rows[:2]]
    _fixed(tmp_path, both, cfg)  # one statement and its question, both True: "exactly one"
    with pytest.raises(DataError, match="break the consistency rule"):
        prepare(cfg, PlantedModel({}))


# -- the terminal ----------------------------------------------------------------------------------
def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("a\x1b[2Jb\u202ec\x07") == "a\\x1b[2Jb\\u202ec\\x07"
    assert printable("one\ntwo") == "one\\x0atwo"
    assert printable("one\ntwo", lines=True) == "one\ntwo"


def test_an_error_line_carries_no_escape_sequence(tmp_path):
    hostile = tmp_path / "claims\x1b[2J\x1b]0;owned\x07.json"
    hostile.write_text(json.dumps([{"question": "q", "choice": "c"}]) + "\n{")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "icm.cli",
            "run",
            "--data",
            str(hostile),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "\\x1b[2J" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- what icm may remove ---------------------------------------------------------------------------
def test_the_sweep_removes_only_icm_temporary_files(tmp_path):
    from icm.files import sweep, write_text

    run = tmp_path / "run"
    (run / "batches").mkdir(parents=True)
    mine = [run / ".notes.tmp", run / "draft.tmp", run / "batches" / ".x.json.tmp"]
    for p in mine:
        p.write_text("the user's")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (run / ".link.icm-abcd.tmp").symlink_to(outside)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".y.icm-abcd.tmp").write_text("not under the run")
    (run / "linked").symlink_to(elsewhere, target_is_directory=True)
    cut_short = run / "batches" / ".state.json.icm-k3j2.tmp"
    cut_short.write_text("{")
    write_text(run / "ok.json", "{}")  # an atomic write leaves no temporary file behind
    assert sweep(run) == 1
    assert not cut_short.exists()
    assert all(p.read_text() == "the user's" for p in mine)
    assert outside.read_text() == "keep" and (run / ".link.icm-abcd.tmp").is_symlink()
    assert (elsewhere / ".y.icm-abcd.tmp").exists()


def test_a_copied_marker_does_not_make_a_folder_icms(tmp_path):
    from icm.errors import RunError
    from icm.run.folder import MARKER, RunFolder

    made = tmp_path / "made"
    made.mkdir()
    RunFolder(made).mark()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "labels.jsonl").write_text("the user's\n")
    (theirs / MARKER).write_bytes((made / MARKER).read_bytes())
    assert RunFolder(made).made_by_icm and not RunFolder(theirs).made_by_icm
    with pytest.raises(RunError, match="marker was made for another folder"):
        RunFolder(theirs).check_new(overwrite=True)
    assert (theirs / "labels.jsonl").read_text() == "the user's\n"


def test_overwrite_removes_icm_names_in_icm_layout_only(tmp_path):
    from icm.run.folder import RunFolder

    cfg, model = setup(tmp_path, chains=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    keep = [run / "batches" / "notes.md", run / "batches" / "000" / "mine.txt"]
    keep += [run / "batches" / "000" / "chain-0" / "plot.png", run / "batches" / "extra" / "x"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("the user's")
    target = tmp_path / "precious.json"
    target.write_text("keep")
    (run / "eval.json").symlink_to(target)  # a link under one of icm's names
    Run.create(cfg, run, overwrite=True)
    assert all(p.read_text() == "the user's" for p in keep)
    assert target.read_text() == "keep" and (run / "eval.json").is_symlink()
    assert not (run / "batches" / "000" / "chain-1").exists()
    assert not (run / "labels.jsonl").exists() and RunFolder(run).made_by_icm


# -- links -----------------------------------------------------------------------------------------
def test_no_write_goes_through_a_link_icm_did_not_make(tmp_path):
    from icm.errors import LinkError
    from icm.files import append_jsonl, write_json

    target = tmp_path / "precious.txt"
    target.write_text("keep")
    for name in ("trace.jsonl", "state.json"):
        (tmp_path / name).symlink_to(target)
    with pytest.raises(LinkError, match="is a link"):
        append_jsonl(tmp_path / "trace.jsonl", {"n": 1})
    with pytest.raises(LinkError, match="is a link"):
        write_json(tmp_path / "state.json", {"n": 1})
    assert target.read_text() == "keep" and (tmp_path / "state.json").is_symlink()


def test_a_run_never_writes_through_links_in_its_folder(tmp_path, capsys):
    from icm.run.folder import RunFolder

    cfg, model = setup(tmp_path)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(target)
    with pytest.raises(Exception, match="is a link"):
        Run.open(run).execute(model)
    assert target.read_text() == "keep"
    # --out given as a link to a folder: refused, nothing written where it points
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(Exception, match="is a link"):
        RunFolder(tmp_path / "out").check_new(overwrite=False)
    assert list(elsewhere.iterdir()) == []


# -- run folders that were edited ------------------------------------------------------------------
def _checkpoint(run):
    return run / "batches" / "000" / "chain-0" / "state.json"


@pytest.mark.parametrize(
    "edit,says",
    [
        (lambda s: s["labels"].__setitem__(0, 2), "-1, 0 or 1"),
        (lambda s: s["labels"].__setitem__(0, True), "-1, 0 or 1"),
        (lambda s: s["labels"].pop(), "must hold"),
        (lambda s: s.__setitem__("iteration", -3), "counts"),
        (lambda s: s.__setitem__("accepted", 10**6), "accepted at most iteration"),
        (lambda s: s.__setitem__("tokens", -1), "counts"),
        (lambda s: s.__setitem__("seconds", "fast"), "number"),
        (lambda s: s.__setitem__("rng", {"bit_generator": "MT19937", "state": {}}), "PCG64"),
        (lambda s: s["rng"].__setitem__("state", "x"), "generator state"),
        (lambda s: s.__setitem__("best_labels", [7]), "best_labels"),
    ],
)
def test_an_edited_checkpoint_is_refused_with_one_line(tmp_path, edit, says):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    saved = json.loads(_checkpoint(run).read_text())
    edit(saved)
    _checkpoint(run).write_text(json.dumps(saved))
    (run / "batches" / "000" / "chain-0" / "final.json").unlink()
    cfg.iterations = 4
    with pytest.raises(RunError, match=says) as e:
        Run.open(run).execute(model)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "edit,says",
    [
        (lambda f: f["final"].__setitem__(0, 2), "'final' must hold"),
        (lambda f: f["final"].__setitem__(0, True), "keep every label"),
        (lambda f: f["final"].pop(), "'final' must hold"),
        (lambda f: f["labels"].__setitem__(0, 1 - f["labels"][0]), "differ from the checkpoint"),
        (lambda f: f["logodds"].pop(), "'logodds'"),
        (lambda f: f["logodds"].__setitem__(1, "big"), "'logodds'"),
        (lambda f: f.__setitem__("utility", None), "numbers"),
        (lambda f: f.__setitem__("iterations", 1), "differ from the checkpoint"),
        (lambda f: f.__setitem__("tokens", -5), "counts"),
        (lambda f: f.__setitem__("scores", 1.5), "counts"),
        (lambda f: f.__setitem__("inconsistencies", 3), "does not match"),
        (lambda f: f.__setitem__("seconds", -1), "negative"),
        (lambda f: f.clear(), "differ from the checkpoint"),
    ],
)
def test_an_edited_search_result_is_refused_with_one_line(tmp_path, edit, says):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    path = run / "batches" / "000" / "chain-0" / "final.json"
    final = json.loads(path.read_text())
    edit(final)
    path.write_text(json.dumps(final))
    with pytest.raises(RunError, match=says) as e:
        Run.open(run).execute(model)
    assert "\n" not in str(e.value) and "final.json" in str(e.value)


def test_a_search_result_read_back_unedited_gives_the_same_labels(tmp_path):
    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    before = (run / "labels.jsonl").read_bytes()
    Run.open(run).execute(model)
    assert (run / "labels.jsonl").read_bytes() == before


def test_a_flipped_fixed_label_in_a_checkpoint_is_refused(tmp_path):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    claim = {"question": "Question 0?", "choice": "Answer 0 to question 0.", "consistency_id": 0}
    _fixed(tmp_path, [{**claim, "human_label": True}], cfg)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    saved = json.loads(_checkpoint(run).read_text())
    saved["labels"][0] = 0
    _checkpoint(run).write_text(json.dumps(saved))
    (run / "batches" / "000" / "chain-0" / "final.json").unlink()
    with pytest.raises(RunError, match="a label a person fixed was changed"):
        Run.open(run).execute(model)


def test_a_missing_plan_is_not_made_again_over_checkpoints(tmp_path):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    (run / "plan.json").unlink()
    with pytest.raises(RunError, match="plan.json is missing"):
        Run.open(run).execute(model)
    assert not (run / "plan.json").exists()


def test_an_edited_config_is_noticed_on_resume(tmp_path):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    config = json.loads((run / "config.json").read_text())
    config["search"]["alpha"] = 50.0
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="config.json no longer holds"):
        Run.open(run).execute(model)
    # what a resume may change (iterations, workers) is not an edit
    config["search"]["alpha"] = cfg.search.alpha
    config["iterations"], config["workers"] = 3, 2
    (run / "config.json").write_text(json.dumps(config))
    Run.open(run).execute(model)


# -- sizes and specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,says",
    [
        (
            'name: a\ntemplate: "Q: {question}"\ntemplate: "R: {question}"\n',
            "line 3: key 'template' appears twice",
        ),
        ('name: &x "aaaa"\ntemplate: "Q: {question}"\nprefix: *x\n', "aliases"),
        ('name: a\n1: b\ntemplate: "Q: {question}"\n', "key 1 is not text"),
        ('template: "Q: {question}"\nconsistency: {rule: [none]}\n', "consistency.rule"),
    ],
)
def test_a_spec_that_yaml_would_read_silently_otherwise_is_refused(tmp_path, text, says):
    from icm.tasks.custom import load_task_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(DataError, match=says) as e:
        load_task_spec(spec)
    assert str(e.value).startswith(str(spec)) and "\n" not in str(e.value)


def test_a_context_budget_smaller_than_any_prompt_is_refused_before_a_write(tmp_path):
    from icm.errors import ConfigError

    class Counts(PlantedModel):
        def count_tokens(self, texts):
            return [len(t) for t in texts]  # a character a token

    cfg, model = setup(tmp_path, context_tokens=16)
    with pytest.raises(ConfigError, match="--context-tokens 16 cannot hold even one prompt: row"):
        prepare(cfg, Counts(model.planted))


# -- files icm opens that are not its own ----------------------------------------------------------
def test_the_call_cache_is_never_another_programs_database(tmp_path):
    import sqlite3

    from icm.backends.caching import CallCache
    from icm.errors import IcmError

    theirs = tmp_path / "app.db"
    db = sqlite3.connect(theirs)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = theirs.read_bytes()
    with pytest.raises(IcmError, match="a database icm did not create"):
        CallCache(theirs)
    assert theirs.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 10)
    with pytest.raises(IcmError, match="cannot use it as the call cache"):
        CallCache(text)
    assert text.read_text() == "not a database at all\n" * 10
    mine = tmp_path / "cache.sqlite"
    CallCache(mine).put("k", [(" True", -0.1)])
    assert CallCache(mine).get("k", top_list) == [[" True", -0.1]]  # icm's own: opened again


# -- time limits that hold -------------------------------------------------------------------------
def test_a_server_that_drip_feeds_its_answer_is_cut_off_at_the_deadline():
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from icm.backends.http import Client
    from icm.errors import ServerError

    class Drip(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):  # a byte every 0.2 s: each wait is short, the whole is not
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{httpd.server_address[1]}/v1", None, 1.0, 1)
        t0 = time.monotonic()
        with pytest.raises(ServerError, match="no whole answer within 1 s"):
            client.call("GET", "/models")
        assert time.monotonic() - t0 < 20  # two attempts of 1 s and a backoff, not 200 s
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_export_refuses_labels_that_are_not_the_runs_rows(tmp_path):
    from icm.errors import RunError

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    rows = files.read_jsonl(run / "labels.jsonl")
    rows[3]["choice"] = "Another claim."
    files.write_jsonl(run / "labels.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["export", str(run), "--format", "sft", "--out", str(out)]) == 2
    assert not out.exists()
    from icm.run.labels import load_labelled

    with pytest.raises(RunError, match="not the rows the run labelled"):
        load_labelled(run)


def test_the_report_reads_only_the_runs_own_chains(tmp_path):
    import shutil

    from icm.eval.report import _traces

    cfg, model = setup(tmp_path, iterations=2)
    run = tmp_path / "run"
    Run.create(cfg, run).execute(model)
    for name in ("chain-1", "chain-x"):
        shutil.copytree(run / "batches" / "000" / "chain-0", run / "batches" / "000" / name)
    assert list(_traces(run)) == ["1"]


# -- servers that answer wrongly -------------------------------------------------------------------
def _legacy(*positions):
    return {"choices": [{"logprobs": {"top_logprobs": list(positions)}}]}


def test_a_logprob_layout_that_does_not_match_the_request_is_refused():
    from icm.backends.answers import top_logprobs
    from icm.errors import ServerError

    one = {" True": -0.2, " False": -1.8}
    assert top_logprobs(_legacy(one), k=2) == list(one.items())
    assert len(top_logprobs(_legacy(one | {" maybe": -3.0}), k=2)) == 3  # the sampled one added
    with pytest.raises(ServerError, match="2 positions where one token was asked for"):
        top_logprobs(_legacy(one, one), k=2)
    with pytest.raises(ServerError, match="where 1 were asked for"):
        top_logprobs(_legacy(one | {" a": -4.0, " b": -5.0}), k=1)
    chat = {"content": [{"top_logprobs": [{"token": " True", "logprob": -0.1}] * 2}]}
    with pytest.raises(ServerError, match="some twice"):
        top_logprobs({"choices": [{"logprobs": chat}]}, k=5)
    same_id = [
        {"id": 7, "token": " True", "logprob": -0.1},
        {"id": 7, "token": " True", "logprob": -2.0},
    ]
    with pytest.raises(ServerError, match="some twice"):
        top_logprobs({"choices": [{"logprobs": {"content": [{"top_logprobs": same_id}]}}]}, k=5)


def test_distinct_tokens_that_share_a_text_are_read_as_that_texts_mass():
    """llama.cpp at a large top k lists byte pieces of one character, each decoding to " "."""
    from icm.backends.answers import label_logprobs, top_logprobs

    entries = [
        {"id": 1, "token": " True", "bytes": [32, 84, 114, 117, 101], "logprob": math.log(0.5)},
        {"id": 2, "token": " ", "bytes": [32], "logprob": math.log(0.2)},
        {"id": 3, "token": " ", "bytes": [32, 195], "logprob": math.log(0.1)},
        {
            "id": 4,
            "token": " False",
            "bytes": [32, 70, 97, 108, 115, 101],
            "logprob": math.log(0.1),
        },
        {"id": 5, "token": "True", "bytes": [84, 114, 117, 101], "logprob": math.log(0.1)},
    ]
    top = top_logprobs({"choices": [{"logprobs": {"content": [{"top_logprobs": entries}]}}]}, k=5)
    assert len(top) == 5
    false, true = label_logprobs(top, [{" False", "False"}, {" True", "True"}], k=5)
    assert math.isclose(true - false, math.log(0.6 / 0.1))
