"""Shared fixtures: the data sets beside the project, and the real default model (loaded once)."""

from __future__ import annotations

import os
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
