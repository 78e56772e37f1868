"""Crash safety: kill a seeded `icm run` with SIGKILL at a random moment, resume it, and compare.

Each try starts the same run as an uninterrupted baseline, kills it at a moment drawn uniformly
over the baseline's wall time (so some kills land while the model loads, some mid-search, some
while the outputs are written), checks that every file in the run folder is complete, resumes it
(`icm run --resume DIR`; a run killed before its folder held a config is simply started again)
and compares labels.jsonl, trace.jsonl and the final U (summary.json "utility") with the
baseline, byte for byte and bit for bit.

    .venv/bin/python benchmarks/kill_resume.py --tries 10
    .venv/bin/python benchmarks/kill_resume.py --quick

The last line is `identical=<k>/<tries>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAIN = Path("batches", "000", "chain-0")
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def icm(*args: str) -> list[str]:
    return [sys.executable, "-m", "icm.cli", "run", *args, "--no-progress"]


def phase(folder: Path, total: int) -> str:
    """Where the killed run stood, from what it left on disk."""
    if not (folder / "config.json").exists():
        return "before its run folder"
    if not (folder / CHAIN / "state.json").exists():
        return "before the first checkpoint"
    done = json.loads((folder / CHAIN / "state.json").read_text())["iteration"]
    if done < total:
        return f"mid-search at iteration {done}/{total}"
    done = (folder / "summary.json").exists()
    return "after the end" if done else "after the search (its review, the outputs)"


def check_files(folder: Path) -> list[str]:
    """Problems with the files a killed run left: every JSON file and every labels line must
    parse; only the append-only trace may end in a torn line (resume drops it)."""
    problems = []
    if not folder.exists():
        return problems
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.endswith(".tmp"):
            continue  # an atomic write cut short: never read, replaced by the next write
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".json":
                json.loads(text)
            elif path.suffix == ".jsonl":
                lines = text.split("\n")
                body = lines[:-1] if path.name == "trace.jsonl" else lines
                for line in body:
                    if line:
                        json.loads(line)
                if path.name == "labels.jsonl" and not text.endswith("\n"):
                    problems.append(f"{path.name}: no final newline")
        except json.JSONDecodeError as e:
            problems.append(f"{path.name}: {e}")
    return problems


def outputs(folder: Path) -> tuple[bytes, bytes, float]:
    summary = json.loads((folder / "summary.json").read_text())
    return (
        (folder / "labels.jsonl").read_bytes(),
        (folder / CHAIN / "trace.jsonl").read_bytes(),
        summary["utility"],
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tries", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="3 tries")
    p.add_argument("--task", default="truthfulqa")
    p.add_argument("--data", default=str(SHARED / "truthfulqa" / "train.json"))
    p.add_argument("--limit", type=int, default=4, help="rows (whole groups)")
    p.add_argument("--initial", type=int, default=2, help="K: random labels at the start")
    p.add_argument(
        "--init",
        default="random",
        help="the search's start; random (not the default zero-shot start, which may have "
        "converged already and skip every iteration) so that kills land mid-search",
    )
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--seed", type=int, default=1, help="seed of the run and of the kill moments")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    args = p.parse_args()
    tries = 3 if args.quick else args.tries
    if not Path(args.data).exists():
        print(f"kill_resume: {args.data} is absent (set ICM_SHARED_DATA)", file=sys.stderr)
        return 2
    settings = [
        *("--task", args.task, "--data", args.data, "--limit", str(args.limit)),
        *("--initial", str(args.initial), "--init", args.init),
        *("--iterations", str(args.iterations)),
        *("--seed", str(args.seed), "--threads", "1"),
    ]
    work = Path(tempfile.mkdtemp(prefix="icm-kill-"))
    rng = random.Random(args.seed)
    try:
        t0 = time.perf_counter()
        subprocess.run(icm(*settings, "--out", str(work / "base")), check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        base = outputs(work / "base")
        print(f"baseline: {wall:.1f} s, U={base[2]!r}", flush=True)
        same = 0
        for k in range(1, tries + 1):
            folder = work / f"try{k}"
            moment = rng.uniform(0, wall)
            proc = subprocess.Popen(
                icm(*settings, "--out", str(folder)),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                proc.wait(timeout=moment)
                killed = "finished before the kill"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = f"killed at {moment:.1f} s"
            where = phase(folder, args.iterations)
            problems = check_files(folder)
            t1 = time.perf_counter()
            if (folder / "config.json").exists():
                again = icm("--resume", str(folder))
            else:  # nothing of the run was kept: start it again
                again = icm(*settings, "--out", str(folder), "--overwrite")
            done = subprocess.run(again, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                problems.append(f"resume failed: {done.stderr.strip()[-300:]}")
                result = None
            else:
                result = outputs(folder)
                parts = zip(("labels.jsonl", "trace.jsonl", "U"), result, base, strict=True)
                problems += [f"{name} differs" for name, a, b in parts if a != b]
            verdict = "identical" if result == base and not problems else "DIFFERENT"
            same += verdict == "identical"
            print(
                f"try {k}: {killed} ({where}), resumed in {time.perf_counter() - t1:.1f} s: "
                + verdict
                + "".join(f"\n  {x}" for x in problems),
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run folders kept in {work}")
    print(f"identical={same}/{tries}")
    return 0 if same == tries else 1


if __name__ == "__main__":
    sys.exit(main())
