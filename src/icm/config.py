"""The configuration of a run. Field help texts are the CLI help; `config.json` reloads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .core.search import SearchConfig


@dataclass
class RunConfig:
    task: str = field(
        default="truthfulqa",
        metadata={
            "help": "task name (see `icm tasks`) or a path to a custom task spec (.yaml/.json)"
        },
    )
    data: str = field(default="", metadata={"help": "data file: a JSON list of objects or JSONL"})
    limit: int | None = field(
        default=None, metadata={"help": "use only the first whole groups, up to this many rows"}
    )
    model: str = field(
        default="default",
        metadata={
            "help": "'default' (embedded SmolLM2-135M), a Hugging Face id, a folder or a .gguf; "
            "openai backend: the served model's name (default: the server's only model)"
        },
    )
    backend: str = field(default="transformers", metadata={"help": "transformers or openai"})
    scorer: str = field(
        default="dc", metadata={"help": "dc (divide and conquer over the KV cache) or naive"}
    )
    device: str | None = field(
        default=None, metadata={"help": "torch device (default: cuda if any)"}
    )
    dtype: str = field(default="float32", metadata={"help": "model weights dtype"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run Python code shipped with the model (only for models you trust)"},
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"}
    )
    base_url: str = field(
        default="",
        metadata={
            "help": "openai backend: the server, e.g. http://127.0.0.1:8000/v1 "
            "(API key from $ICM_API_KEY or $OPENAI_API_KEY; see docs/servers.md)"
        },
    )
    concurrency: int = field(default=8, metadata={"help": "openai backend: requests in flight"})
    top_logprobs: int = field(
        default=20, metadata={"help": "openai backend: top-k next-token log-probs per request"}
    )
    timeout: float = field(default=120.0, metadata={"help": "openai backend: seconds per request"})
    retries: int = field(
        default=6, metadata={"help": "openai backend: retries on 429/5xx/timeouts, with backoff"}
    )
    call_cache: str | None = field(
        default=None,
        metadata={"help": "openai backend: SQLite file of answers, so a rerun sends no request"},
    )
    iterations: int | None = field(
        default=None,
        metadata={
            "help": "total search iterations (default: 2 x examples); on --resume, the new total"
        },
    )
    batch_size: int | None = field(
        default=None,
        metadata={"help": "rows per search batch (whole groups; the paper used 256); default: all"},
    )
    context_tokens: int | None = field(
        default=None,
        metadata={"help": "prompt-token budget of a batch (default: the model's context length)"},
    )
    iterative_finetune: bool = field(
        default=False,
        metadata={
            "help": "label batch j+1 with the model LoRA-fine-tuned on the ICM labels of batches "
            "1..j (needs --batch-size; models kept in batches/NNN/finetuned)"
        },
    )
    finetune_epochs: int = field(default=3, metadata={"help": "iterative: epochs per fine-tune"})
    finetune_lr: float = field(default=2e-4, metadata={"help": "iterative: LoRA learning rate"})
    finetune_max_steps: int | None = field(
        default=None, metadata={"help": "iterative: at most this many steps per fine-tune"}
    )
    seed: int = field(default=0, metadata={"help": "random seed: same seed and model, same run"})
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> RunConfig:
        d = dict(d)
        search = SearchConfig(**d.pop("search", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(search=search, **{k: v for k, v in d.items() if k in names})
