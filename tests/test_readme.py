"""Every Python block of the README runs as written (a new user copies them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run(tmp_path, default_model_converted):
    blocks = python_blocks()
    assert blocks
    for k, code in enumerate(blocks):
        script = tmp_path / f"block{k}.py"
        script.write_text("import torch\ntorch.set_num_threads(1)\n" + code)
        p = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path
        )
        assert p.returncode == 0, f"README block {k}:\n{code}\n{p.stderr[-2000:]}"
