"""Model backends, one file each, all implementing `icm.core.model.LabelModel`.

`make_model(cfg, fmt)` builds the one a run's config names; each backend is imported only when
asked for (the transformers one imports torch).
"""

from __future__ import annotations

from ..config import RunConfig
from ..core.data import PromptFormat
from ..core.model import LabelModel


def make_model(cfg: RunConfig, fmt: PromptFormat) -> LabelModel:
    """The backend named in the config, with the task's prompt format."""
    if cfg.backend == "openai":
        from .openai import OpenAIModel, api_key_from_env

        return OpenAIModel(
            cfg.base_url,
            cfg.model,
            fmt=fmt,
            top_logprobs=cfg.top_logprobs,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            retries=cfg.retries,
            api_key=api_key_from_env(),
            call_cache=cfg.call_cache,
        )
    from .transformers import TransformersModel, set_threads

    set_threads(cfg.threads)
    return TransformersModel.load(
        cfg.model,
        fmt=fmt,
        scorer=cfg.scorer,
        device=cfg.device,
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        device_map=cfg.device_map,
        pack_tokens=cfg.pack_tokens,
    )


def where(model: LabelModel) -> str:
    """How a model runs (device, dtype, threads), for a run's first line; "" for a backend
    that does not say (`describe` is optional)."""
    describe = getattr(model, "describe", None)
    return describe() if callable(describe) else ""


__all__ = ["LabelModel", "make_model", "where"]
