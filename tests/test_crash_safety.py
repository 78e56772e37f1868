"""Nothing lost: a killed run resumes to exactly the result of an uninterrupted one, a run folder is
never clobbered by accident, and model faults end in one line that says what to change.

Runs are tiny (4 TruthfulQA claims, 4 iterations) with the real default model. They start from no
labels (`--init random --initial 0`), so each of the 4 iterations labels a new claim and calls the
model: a converged start would make later iterations instant and leave nothing to kill mid-search.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icm.core.search import SearchConfig
from icm.errors import ContextLengthError, RunError
from icm.run import Run
from icm.run.config import RunConfig
from icm.run.folder import RunFolder

from .conftest import custom_code_model, shared

ICM = Path(sys.executable).parent / "icm"
GOOD = Path(__file__).parent / "data" / "bad" / "good.jsonl"
ITERATIONS = 4


def config() -> RunConfig:
    data = str(shared("truthfulqa/train.json"))
    return RunConfig(
        task="truthfulqa",
        data=data,
        limit=4,
        iterations=ITERATIONS,
        threads=1,
        seed=3,
        search=SearchConfig(initial=0, init="random"),
    )


def cli_settings(cfg: RunConfig) -> list[str]:
    return [
        *("--task", cfg.task, "--data", cfg.data, "--limit", str(cfg.limit)),
        *("--iterations", str(cfg.iterations), "--seed", str(cfg.seed), "--threads", "1"),
        *("--initial", str(cfg.search.initial), "--init", cfg.search.init, "--no-progress"),
    ]


CHAIN = Path("batches", "000", "chain-0")


def outputs(folder: Path) -> tuple[bytes, bytes, float]:
    """What must not change across a kill: labels, the search's trace and the final U."""
    return (
        (folder / "labels.jsonl").read_bytes(),
        (folder / CHAIN / "trace.jsonl").read_bytes(),
        json.loads((folder / "summary.json").read_text())["utility"],
    )


@pytest.fixture(scope="module")
def baseline(default_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("baseline") / "run"
    Run.create(config(), folder).execute(default_model)
    return folder


@pytest.mark.slow
def test_sigkill_mid_search_then_resume_gives_the_same_labels_and_u(baseline, tmp_path):
    trace = (baseline / CHAIN / "trace.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in trace]
    assert not any(s.get("skipped") for s in steps[:ITERATIONS])  # each iteration calls the model
    run = tmp_path / "run"
    proc = subprocess.Popen([str(ICM), "run", *cli_settings(config()), "--out", str(run)])
    state = run / CHAIN / "state.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if state.exists() and json.loads(state.read_text())["iteration"] >= 1:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = json.loads(state.read_text())["iteration"]
    assert 1 <= killed_at < ITERATIONS, "the run ended before it could be killed mid-search"
    assert not (run / "summary.json").exists()
    with open(run / CHAIN / "trace.jsonl", "a") as f:
        f.write('{"n": 99, "T": 1.0, "exam')  # a line cut short by a kill, as a crash leaves it
    done = subprocess.run(
        [str(ICM), "run", "--resume", str(run), "--no-progress"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert outputs(run) == outputs(baseline)


def test_killed_before_the_first_checkpoint_resumes_fresh(baseline, default_model, tmp_path):
    run = Run.create(config(), tmp_path / "run")  # config.json only, as a kill there leaves it
    Run.open(run.path).execute(default_model)
    assert outputs(run.path) == outputs(baseline)


def test_killed_while_writing_outputs_resumes_to_the_same_files(baseline, default_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    (run / "summary.json").unlink()  # labels.jsonl was replaced, summary.json not yet
    (run / ".summary.json.icm-x1y2.tmp").write_text('{"utility": -1')  # a write cut short
    Run.open(run).execute(default_model)
    assert outputs(run) == outputs(baseline)
    assert not list(run.rglob("*.tmp"))  # the resumed run sweeps what the kill left


def test_an_unreadable_checkpoint_is_a_one_line_error(baseline, default_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    (run / CHAIN / "state.json").write_text('{"labels": [1, 0], "iteration": ')
    with pytest.raises(RunError, match=r"state.json: unreadable checkpoint"):
        Run.open(run).execute(default_model)


def test_a_new_run_never_clobbers_an_existing_one(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "labels.jsonl").write_text('{"icm_label": true}\n')
    cmd = [str(ICM), "run", "--data", str(GOOD), "--no-progress", "--out"]
    p = subprocess.run([*cmd, str(old)], capture_output=True, text=True)
    assert p.returncode == 2 and "already exists" in p.stderr and "--overwrite" in p.stderr
    assert (old / "labels.jsonl").read_text() == '{"icm_label": true}\n'
    p = subprocess.run([*cmd, str(old / "labels.jsonl")], capture_output=True, text=True)
    assert p.returncode == 2 and "not a folder" in p.stderr
    assert "Traceback" not in p.stderr


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    old = tmp_path / "old"
    (old / "batches" / "000").mkdir(parents=True)
    RunFolder(old).mark()
    for name in ("state.json", "summary.json", "batches/000/summary.json", "notes.txt"):
        (old / name).write_text("{}")
    run = Run.create(RunConfig(data=str(GOOD)), old, overwrite=True)
    left = sorted(str(p.relative_to(old)) for p in old.rglob("*"))
    assert left == [".icm-run", ".lock", "config.json", "notes.txt"]
    assert RunConfig.from_json(json.loads((old / "config.json").read_text())) == run.cfg


@pytest.mark.slow
def test_model_code_runs_only_when_the_user_trusts_it(tmp_path):
    """A model folder whose config points at its own Python code: refused by default."""
    marker = tmp_path / "code-ran"
    model = custom_code_model(tmp_path / "model", marker)
    out = tmp_path / "run"
    cmd = [str(ICM), "run", "--data", str(GOOD), "--model", str(model), "--out", str(out)]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "custom code" in p.stderr, p.stderr
    assert not marker.exists()
    p = subprocess.run([*cmd, "--trust-remote-code"], capture_output=True, text=True, env=env)
    assert marker.exists(), p.stderr  # the control: asked for, the code does run
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert not out.exists()

    # A run folder that trusted the code (perhaps someone else's) does not pass that trust on.
    marker.unlink()
    cfg = RunConfig(data=str(GOOD), model=str(model), trust_remote_code=True)
    Run.create(cfg, out)
    resume = [str(ICM), "run", "--resume", str(out), "--no-progress"]
    p = subprocess.run(resume, capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "--trust-remote-code" in p.stderr, p.stderr
    assert not marker.exists()
    p = subprocess.run([*resume, "--trust-remote-code"], capture_output=True, text=True, env=env)
    assert marker.exists(), p.stderr


@pytest.mark.slow
def test_out_of_memory_in_a_forward_pass_says_what_to_lower():
    """A real allocation failure: the address space is capped just above the loaded model."""
    script = """
import re, resource, torch
torch.set_num_threads(1)
from icm.backends.transformers import TransformersModel
from icm.errors import ModelError
m = TransformersModel.load("default")
m.query_logprobs([], [], ["warm up"])
vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
try:
    m.query_logprobs([], [], ["word " * 8000])
except ModelError as e:
    print("ModelError:", e)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "ModelError: out of memory on cpu" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "--batch-size" in p.stdout and "--dtype" in p.stdout


def test_demonstrations_longer_than_the_context_name_the_limit(default_model):
    long = "Question: q\nClaim: " + " word" * 5000 + "\nI think this claim is"
    with pytest.raises(ContextLengthError, match=r"context is 8192.*--batch-size"):
        default_model.loo_logprobs([long, long + " again"], [0, 1])
