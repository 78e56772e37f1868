"""Model backends, one file each, every one a subclass of `icm.core.model.LabelModel`.

A backend is registered by name with its options dataclass (in `options.py`) and the module that
builds it; that module is imported only when the backend is used (the transformers one imports
torch). A new backend is one module, one options dataclass and one `register` line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.data import PromptFormat
from ..core.model import LabelModel
from .options import ModelChoice, OpenAIOptions, TransformersOptions, options_of


@dataclass(frozen=True)
class Backend:
    """A backend's name, its options and where its builder lives (`module:function`, called
    as `function(model_name, options, fmt)`)."""

    name: str
    options: type
    builder: str

    def build(self) -> Callable[[str, Any, PromptFormat], LabelModel]:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module, __package__), function)


BACKENDS: dict[str, Backend] = {}


def register(name: str, options: type, builder: str) -> None:
    BACKENDS[name] = Backend(name, options, builder)


register("transformers", TransformersOptions, ".transformers:from_options")
register("openai", OpenAIOptions, ".openai:from_options")


def make_model(cfg: ModelChoice, fmt: PromptFormat) -> LabelModel:
    """The backend a config names (`cfg` holds its options too), with the task's prompt format."""
    backend = BACKENDS[cfg.backend]
    return backend.build()(cfg.model, options_of(backend.options, cfg), fmt)


def where(model: LabelModel) -> str:
    """How a model runs (device, dtype, threads), for a run's first line."""
    return model.describe()


__all__ = ["BACKENDS", "LabelModel", "make_model", "register", "where"]
