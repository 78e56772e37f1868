"""Each backend's options, one dataclass per backend; field help texts are the CLI help.

`RunConfig` (and with it `config.json` and the flags) holds the fields of all of them, so a flag
keeps its name whichever backend runs; `icm run --help` lists each dataclass under its own
heading. `resumable=True` marks an option that says where or how fast a run computes, not what:
it may change on `--resume`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..options import option

SCORERS = ("dc", "naive")


def threads_option(**meta: object) -> int | None:
    """The --threads option, the same wherever torch runs in this process."""
    return option(
        None,
        "CPU threads for torch (default: the physical cores less those other work keeps busy,"
        " at least 1)",
        min=1,
        max=1024,
        **meta,
    )


def trust_option(**meta: object) -> bool:
    """The --trust-remote-code option: off unless given on each command."""
    return option(
        False, "run Python code shipped with the model (only for models you trust)", **meta
    )


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class TransformersOptions:
    """transformers backend: the model runs in this process (torch)."""

    scorer: str = option(
        "dc", "dc (divide and conquer over the KV cache) or naive", choices=SCORERS
    )
    device: str | None = option(
        None, "torch device, e.g. cpu, cuda, cuda:1 (default: cuda if any)", resumable=True
    )
    device_map: str | None = option(
        None,
        "auto: spread a model too large for one GPU over all GPUs (and CPU memory)",
        choices=("auto",),
    )
    pack_tokens: int | None = option(
        None,
        "tokens one forward pass may hold when whole subtrees of the divide and conquer go "
        "through the model at once (0: never; default: 4096 on a GPU, 0 on a CPU)",
        min=0,
        max=10**6,
    )
    dtype: str = option(
        "auto", "weights dtype (auto: bfloat16 on a GPU that has it, else float32)", choices=DTYPES
    )
    trust_remote_code: bool = trust_option(resumable=True)
    threads: int | None = threads_option(resumable=True)


@dataclass
class OpenAIOptions:
    """openai backend: an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp)."""

    base_url: str = option(
        "",
        "openai backend: the server, e.g. http://127.0.0.1:8000/v1 "
        "(API key from $ICM_API_KEY or $OPENAI_API_KEY; see docs/servers.md)",
        resumable=True,
    )
    concurrency: int = option(
        8, "openai backend: requests in flight", min=1, max=1024, resumable=True
    )
    top_logprobs: int = option(
        20, "openai backend: top-k next-token log-probs per request", min=1, max=1000
    )
    timeout: float = option(
        120.0, "openai backend: seconds per request", above=0, max=86400, resumable=True
    )
    retries: int = option(
        6,
        "openai backend: retries on 429/5xx/timeouts, with backoff",
        min=0,
        max=100,
        resumable=True,
    )


@dataclass(frozen=True)
class Backend:
    """A backend's name, its options and where its builder lives (`module:function`, called
    as `function(model_name, options, fmt)`); the module is imported only when it is used."""

    name: str
    options: type
    builder: str

    def build(self) -> Callable[..., Any]:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module, __package__), function)


BACKENDS: dict[str, Backend] = {}


def register(name: str, options: type, builder: str) -> None:
    BACKENDS[name] = Backend(name, options, builder)


register("transformers", TransformersOptions, ".transformers:from_options")
register("openai", OpenAIOptions, ".openai:from_options")


@dataclass
class ModelChoice:
    """Which model scores, and through which backend."""

    model: str = option(
        "default",
        "'default' (embedded SmolLM2-135M), a Hugging Face id, a folder or a .gguf; "
        "openai backend: the served model's name (default: the server's only model)",
    )
    backend: str = option("transformers", " or ".join(BACKENDS), choices=tuple(BACKENDS))
    call_cache: str | None = option(
        None,
        "SQLite file of the model's answers, so a rerun computes nothing again (openai backend: "
        "per request)",
        resumable=True,
    )


def check_base_url(url: str) -> None:
    """A server address, without credentials: those would be written to config.json."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"--base-url: not a valid URL ({e})") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--base-url: expected http(s)://HOST[:PORT][/v1]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            "--base-url holds credentials or a query string; it is saved in config.json: "
            "give the API key in $ICM_API_KEY instead"
        )
