"""The cache of converted models: a damaged copy is noticed at load and converted again, and a
cache folder that cannot be written is refused before the conversion starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icm.backends import loading
from icm.backends.loading import CHECKSUMS, cache_problem, converted_gguf, default_gguf


@pytest.fixture
def cache_copy(tmp_path, monkeypatch, default_model_converted) -> Path:
    """A private model cache holding a copy of the default model's conversion."""
    monkeypatch.setenv("ICM_CACHE", str(tmp_path / "cache"))
    good = Path(default_model_converted)
    copy = tmp_path / "cache" / "models" / good.name
    shutil.copytree(good, copy)
    assert cache_problem(copy) is None
    return copy


def damage(file: Path, how: str) -> None:
    stat = file.stat()
    with open(file, "r+b") as f:
        if how == "truncate":
            f.truncate(stat.st_size // 2)
        else:  # zero a stretch in the middle, keeping the size and the modification time
            f.seek(stat.st_size // 2)
            f.write(b"\0" * 65536)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize(
    ("file", "how", "says"),
    [
        ("model.safetensors", "truncate", "wrong size"),
        ("model.safetensors", "zero", "does not match its checksum"),
        ("tokenizer.json", "zero", "does not match its checksum"),
        ("config.json", "delete", "lacks config.json"),
        (CHECKSUMS, "delete", f"lacks {CHECKSUMS}"),
        (CHECKSUMS, "escape", "outside"),
    ],
)
def test_a_damaged_copy_is_named(cache_copy, file, how, says):
    target = cache_copy / file
    if how == "delete":
        target.unlink()
    elif how == "escape":
        target.write_text('{"config.json": {}, "../../../etc/hostname": {}}')
    else:
        damage(target, how)
    problem = cache_problem(cache_copy)
    assert problem is not None and says in problem


@pytest.mark.slow
def test_a_damaged_copy_is_converted_again_with_one_line(cache_copy, capfd):
    weights = cache_copy / "model.safetensors"
    damage(weights, "zero")
    loading._verified.clear()
    out = converted_gguf(default_gguf())
    err = capfd.readouterr().err
    assert out == cache_copy
    said = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert all(line.startswith("icm:") for line in said), err  # no loader's progress bar
    assert "does not match its checksum" in said[0] and "converting it again" in said[0]
    assert cache_problem(out) is None
    with open(weights, "rb") as f:
        f.seek(weights.stat().st_size // 2)
        assert f.read(65536) != b"\0" * 65536
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left


@pytest.mark.slow
def test_an_unwritable_cache_is_refused_before_converting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    data = tmp_path / "claims.jsonl"
    rows = [
        {"question": f"Q{g}?", "choice": f"A{k}.", "consistency_id": g}
        for g in range(3)
        for k in (0, 1)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "ICM_CACHE": str(blocker / "cache")}
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "icm", "run", "--data", str(data), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "model cache cannot be written" in lines[0], run.stderr
    assert str(blocker / "cache" / "models") in lines[0]
    assert "converting" not in run.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()  # refused before the run folder was made
