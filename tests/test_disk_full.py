"""A full disk, for real: `icm run` writes its run folder onto a tiny tmpfs (mounted in a user and
mount namespace of its own), fails with one line, leaves a valid checkpoint, and a resume once
there is room again gives exactly the labels, trace and U of an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ICM = Path(sys.executable).parent / "icm"
CHAIN = Path("batches", "000", "chain-0")
SETTINGS = ["--limit", "4", "--iterations", "4", "--initial", "2", "--seed", "5", "--threads", "1"]


def can_mount_tmpfs(where: Path) -> bool:
    script = f"mount -t tmpfs -o size=16k tmpfs {where}"
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True)
    return p.returncode == 0


def outputs(folder: Path) -> tuple[bytes, bytes, float]:
    return (
        (folder / "labels.jsonl").read_bytes(),
        (folder / CHAIN / "trace.jsonl").read_bytes(),
        json.loads((folder / "summary.json").read_text())["utility"],
    )


@pytest.mark.slow
def test_disk_full_then_resume(tmp_path, default_model_converted):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not can_mount_tmpfs(mnt):
        pytest.skip("this machine cannot mount a tmpfs in a user namespace (unshare -rm)")
    data = tmp_path / "claims.jsonl"
    rows = [
        {"question": "Which planet is largest?", "choice": c, "label": y, "consistency_id": 0}
        for c, y in (("Jupiter.", 1), ("Mars.", 0), ("Saturn.", 0), ("The largest is Jupiter.", 1))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = [str(ICM), "run", "--data", str(data), *SETTINGS, "--no-progress"]
    base = tmp_path / "base"
    assert subprocess.run([*run, "--out", str(base)], capture_output=True).returncode == 0

    mid_search = 0
    for size in (24, 20, 28, 16, 32, 40):
        copy = tmp_path / f"full-{size}"
        err = tmp_path / f"err-{size}"
        script = (
            f"mount -t tmpfs -o size={size}k tmpfs {mnt} && "
            f"{' '.join(run)} --out {mnt}/run 2> {err}; echo $? > {err}.rc; "
            f"cp -a {mnt}/run {copy} 2>/dev/null; true"
        )
        subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600)
        code = int(Path(f"{err}.rc").read_text())
        message = err.read_text()
        if code == 0:
            continue  # it all fitted
        assert code in (1, 2) and message.count("\n") == 1, message
        assert message.startswith("icm: ") and "No space left on device" in message, message
        if not (copy / "config.json").exists():
            continue  # full before the run folder held a config: nothing to resume
        state = copy / CHAIN / "state.json"
        if state.exists():
            json.loads(state.read_text())  # the checkpoint is whole
            mid_search += json.loads(state.read_text())["iteration"] < 4
        done = subprocess.run(
            [str(ICM), "run", "--resume", str(copy), "--no-progress"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert outputs(copy) == outputs(base), size
        if mid_search:
            break
    assert mid_search, "no size filled the disk in the middle of the search"
