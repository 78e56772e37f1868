"""Shared fixtures: the data sets beside the project, and the real default model (loaded once)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("ICM_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


def shared(rel: str) -> Path:
    """A file under ../shared/data, or skip the test when the data sets are absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data sets are not beside this checkout")
    return path


def custom_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config points at its own Python code, which writes `marker` when
    it runs (and then fails to load: it defines no model)."""
    from icm.backends.transformers import resolve

    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(resolve("default")) / name, folder / name)
    auto = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    auto["AutoModelForSequenceClassification"] = "custom.Model"
    (folder / "config.json").write_text(json.dumps({"model_type": "custom", "auto_map": auto}))
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder


@pytest.fixture(scope="session")
def default_model_converted() -> str:
    """The cached conversion of the embedded default model, made here if it is missing."""
    from icm.backends.transformers import resolve

    return resolve("default")


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M through transformers (converted from GGUF once, then cached)."""
    import torch

    from icm.backends.transformers import TransformersModel

    torch.set_num_threads(1)
    return TransformersModel.load("default", scorer="dc")
