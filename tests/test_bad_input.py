"""Hostile input through the real command line: one line naming the file, the row and the field,
exit code 2, no traceback, and nothing created or touched.

The corpus is `tests/data/bad/`; `cases.json` lists each case with its task and the substrings
its error must hold. Data errors fire before the model loads; only the case of an example longer
than the model's context loads the model (`"model": true`): that case first makes sure the default
model is converted, so the one-time conversion notice of a fresh machine is not part of its output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from icm.run.folder import RunFolder
from icm.tasks import get_task

BAD = Path(__file__).parent / "data" / "bad"
CASES = json.loads((BAD / "cases.json").read_text())
ICM = Path(sys.executable).parent / "icm"


def case_id(case: dict) -> str:
    return f"{case['task']}:{case['data']}"


def icm_run(case: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    task = case["task"]
    if task.endswith((".yaml", ".json")):
        task = str(BAD / task)
    data = str(BAD / case["data"])
    cmd = [str(ICM), "run", "--task", task, "--data", data, "--out", str(out), "--threads", "1"]
    return subprocess.run(
        [*cmd, "--no-progress", *extra], capture_output=True, text=True, timeout=600
    )


def assert_clean_error(p: subprocess.CompletedProcess, case: dict) -> None:
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: "), p.stderr
    for part in case["expect"]:
        assert part in lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_corpus_is_complete():
    """Every file of the corpus is a case (or a case's task spec), and there are enough cases."""
    named = {c["data"] for c in CASES} | {c["task"] for c in CASES}
    files = {p.name for p in BAD.iterdir()} - {"cases.json"}
    assert files <= named, files - named
    assert len(CASES) >= 25


def params(cases: list[dict]) -> list:
    """The cases as parameters; one that loads the model is in the slow tier."""
    return [
        pytest.param(c, id=case_id(c), marks=[pytest.mark.slow] if c.get("model") else [])
        for c in cases
    ]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_fails_before_the_run_folder_exists(case, tmp_path, request):
    if case.get("model"):
        request.getfixturevalue("default_model_converted")
    p = icm_run(case, tmp_path / "runs" / "new")
    assert_clean_error(p, case)
    assert not (tmp_path / "runs").exists()


# One case per kind of check (file, row, comparison, spec, data set, model); the order of checks
# and folder writes is the same for every case.
UNTOUCHED = (
    "truthfulqa:invalid_json.json",
    "truthfulqa:label_two.jsonl",
    "alpaca:comparison_no_reverse.jsonl",
    "spec_missing_key_field.yaml:reviews.jsonl",
    "truthfulqa:single_row.jsonl",
    "truthfulqa:too_long.jsonl",
)


@pytest.mark.parametrize("case", params([c for c in CASES if case_id(c) in UNTOUCHED]))
def test_bad_input_leaves_an_existing_run_untouched(case, tmp_path, request):
    """Even with --overwrite, a run is only replaced once the new input has been checked."""
    if case.get("model"):
        request.getfixturevalue("default_model_converted")
    run = tmp_path / "run"
    (run / "batches" / "000").mkdir(parents=True)
    RunFolder(run).mark()
    for name in ("config.json", "state.json", "summary.json", "batches/000/state.json"):
        (run / name).write_text('{"kept": true}\n')
    (run / "labels.jsonl").write_text('{"icm_label": true}\n')
    before = snapshot(run)
    p = icm_run(case, run, "--overwrite")
    assert_clean_error(p, case)
    assert snapshot(run) == before


def test_byte_order_mark_is_accepted(tmp_path):
    rows = [{"question": "q", "choice": c, "consistency_id": 0} for c in ("a", "b")]
    for name, text in (("rows.json", json.dumps(rows)), ("rows.jsonl", json.dumps(rows[0]))):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert get_task("truthfulqa").load(path).examples[0].prompt.startswith("Question: q")


@pytest.mark.parametrize(
    "model, message",
    [
        ("/no/such/model", "/no/such/model: no such model folder"),
        ("./models/missing", "./models/missing: no such model folder"),
        ("missing.gguf", "missing.gguf: GGUF file not found"),
    ],
)
def test_a_model_that_is_not_there_is_one_line(model, message, tmp_path):
    """A path that names nothing is said to be one, not read as a Hub id that breaks its rules."""
    p = icm_run({"task": "truthfulqa", "data": "good.jsonl"}, tmp_path / "new", "--model", model)
    assert_clean_error(p, {"expect": [message]})
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["compare --judge", "rl --reward"])
def test_a_judge_or_reward_model_that_is_not_there_is_one_line(command, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n')
    out = tmp_path / "out"
    argv = {
        "compare --judge": ["compare", "default", "default", "--prompts", str(prompts)],
        "rl --reward": ["rl", "--prompts", str(prompts)],
    }[command]
    flag = command.split()[1]
    p = subprocess.run(
        [str(ICM), *argv, flag, "/no/such/model", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_clean_error(p, {"expect": ["/no/such/model: no such model folder"]})
    assert not out.exists()
