"""The configuration of a run. Field help texts are the CLI help; `config.json` reloads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .core.search import SearchConfig
from .errors import ConfigError
from .options import SEED_MAX, check, option
from .options import from_json as _from_json

BACKENDS = ("transformers", "openai")
SCORERS = ("dc", "naive")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RunConfig:
    task: str = option(
        "truthfulqa", "task name (see `icm tasks`) or a path to a custom task spec (.yaml/.json)"
    )
    data: str = option("", "data file: a JSON list of objects or JSONL")
    limit: int | None = option(None, "use only the first whole groups, up to this many rows", min=2)
    model: str = option(
        "default",
        "'default' (embedded SmolLM2-135M), a Hugging Face id, a folder or a .gguf; "
        "openai backend: the served model's name (default: the server's only model)",
    )
    backend: str = option("transformers", "transformers or openai", choices=BACKENDS)
    scorer: str = option(
        "dc", "dc (divide and conquer over the KV cache) or naive", choices=SCORERS
    )
    device: str | None = option(None, "torch device, e.g. cpu, cuda, cuda:1 (default: cuda if any)")
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
    trust_remote_code: bool = option(
        False, "run Python code shipped with the model (only for models you trust)"
    )
    threads: int | None = option(
        None,
        "CPU threads for torch (default: the physical cores less those other work keeps busy,"
        " at least 1)",
        min=1,
        max=1024,
    )
    base_url: str = option(
        "",
        "openai backend: the server, e.g. http://127.0.0.1:8000/v1 "
        "(API key from $ICM_API_KEY or $OPENAI_API_KEY; see docs/servers.md)",
    )
    concurrency: int = option(8, "openai backend: requests in flight", min=1, max=1024)
    top_logprobs: int = option(
        20, "openai backend: top-k next-token log-probs per request", min=1, max=1000
    )
    timeout: float = option(120.0, "openai backend: seconds per request", above=0, max=86400)
    retries: int = option(
        6, "openai backend: retries on 429/5xx/timeouts, with backoff", min=0, max=100
    )
    call_cache: str | None = option(
        None, "openai backend: SQLite file of answers, so a rerun sends no request"
    )
    iterations: int | None = option(
        None,
        "total search iterations (default: 2 x examples); on --resume, the new total",
        min=0,
        max=10**9,
    )
    batch_size: int | None = option(
        None, "rows per search batch (whole groups; the paper used 256); default: all", min=2
    )
    context_tokens: int | None = option(
        None, "prompt-token budget of a batch (default: the model's context length)", min=16
    )
    iterative_finetune: bool = option(
        False,
        "label batch j+1 with the model LoRA-fine-tuned on the ICM labels of batches "
        "1..j (needs --batch-size; models kept in batches/NNN/finetuned)",
    )
    finetune_epochs: int = option(3, "iterative: epochs per fine-tune", min=1, max=10**6)
    finetune_lr: float = option(2e-4, "iterative: LoRA learning rate", above=0, max=10)
    finetune_max_steps: int | None = option(
        None, "iterative: at most this many steps per fine-tune", min=1
    )
    chains: int = option(
        1,
        "independent searches per batch (seeds (seed, batch, chain)), combined by --combine; "
        "every row gets its confidence from all of them",
        min=1,
        max=64,
    )
    combine: str = option(
        "best-u",
        "the labels of several chains: best-u (the chain of highest U) or vote (each row's "
        "majority)",
        choices=("best-u", "vote"),
    )
    workers: int = option(
        1, "searches (batches, chains) run at once against the backend", min=1, max=256
    )
    fixed_labels: str | None = option(
        None,
        "CSV or JSONL of labels a person gave (column human_label, e.g. a filled-in `icm export "
        "--format review`): fixed, never flipped, shown as demonstrations",
    )
    seed: int = option(0, "random seed: same seed and model, same run", min=0, max=SEED_MAX)
    search: SearchConfig = field(default_factory=SearchConfig)

    def check(self) -> None:
        """Every option in its range, and the ones that must agree with each other."""
        check(self)
        s = self.search
        if s.tmin > s.t0:
            raise ConfigError(f"--tmin ({s.tmin}) must not exceed --t0 ({s.t0})")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if self.base_url:
            check_base_url(self.base_url)
        if self.iterative_finetune and self.backend != "transformers":
            raise ConfigError(
                "--iterative-finetune trains the model: it needs --backend transformers"
            )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: object, source: str = "config.json") -> RunConfig:
        cfg = _from_json(cls, d, source)
        try:
            cfg.check()
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e
        return cfg


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
