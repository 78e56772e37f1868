"""Model backends, one file each, every one a subclass of `icm.core.model.LabelModel`.

A backend is registered by name with its options dataclass and the module that builds it (in
`options.py`, where `--backend` takes its choices from the registry); that module is imported
only when the backend is used (the transformers one imports torch). A new backend is one module,
one options dataclass with its `register` line, and that dataclass among `RunConfig`'s bases.
"""

from __future__ import annotations

from ..core.data import PromptFormat
from ..core.model import LabelModel
from ..options import options_of
from .options import BACKENDS, ModelChoice, register


def make_model(cfg: ModelChoice, fmt: PromptFormat) -> LabelModel:
    """The backend a config names (`cfg` holds its options too), with the task's prompt format."""
    backend = BACKENDS[cfg.backend]
    model = backend.build()(cfg.model, options_of(backend.options, cfg), fmt)
    if cfg.call_cache:
        from .caching import with_cache

        try:
            return with_cache(model, cfg.call_cache, fmt)
        except BaseException:
            model.close()
            raise
    return model


def where(model: LabelModel) -> str:
    """How a model runs (device, dtype, threads), for a run's first line."""
    return model.describe()


__all__ = ["BACKENDS", "LabelModel", "make_model", "register", "where"]
