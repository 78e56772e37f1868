"""The configuration of a run. Field help texts are the CLI help; `config.json` reloads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..backends.options import ModelChoice, OpenAIOptions, TransformersOptions, check_base_url
from ..core.search import ALGORITHMS, SearchConfig
from ..errors import ConfigError
from ..options import SEED_MAX, check, option
from ..options import from_json as _from_json
from ..tasks.readers import ReadOptions
from ..train.config import TrainConfig
from .tracking import REPORT_TO, check_report_to


def training(name: str, help: str) -> Any:
    """A `TrainConfig` option as iterative ICM takes it: TrainConfig's default and bounds."""
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return option(f.default, help, **{k: v for k, v in f.metadata.items() if k != "help"})


@dataclass
class RunConfig(ReadOptions, OpenAIOptions, TransformersOptions, ModelChoice):
    """The data, its batches and chains.

    With the model and its backend's options (inherited from `icm.backends.options`) and the
    search (`SearchConfig`), all a run computes: `config.json` holds it."""

    task: str = option(
        "truthfulqa", "task name (see `icm tasks`) or a path to a custom task spec (.yaml/.json)"
    )
    data: str = option(
        "",
        "the claims: a JSON, JSONL, CSV, TSV or Parquet file, a datasets folder (save_to_disk) "
        "or hf:NAME[:SPLIT] from the local Hugging Face cache",
    )
    limit: int | None = option(None, "use only the first whole groups, up to this many rows", min=2)
    iterations: int | None = option(
        None,
        "total search iterations (default: 2 x examples); on --resume, the new total",
        min=0,
        max=10**9,
        resumable=True,
    )
    batch_size: int | None = option(
        None, "rows per search batch (whole groups; the paper used 256); default: all", min=2
    )
    context_tokens: int | None = option(
        None, "prompt-token budget of a batch (default: the model's context length)", min=16
    )
    report_to: str = option(
        "none",
        "where the curves go: tensorboard writes U, T, agreement and the searched share of "
        "every search per iteration to RUN/tensorboard",
        choices=REPORT_TO,
        resumable=True,
    )
    iterative_finetune: bool = option(
        False,
        "label batch j+1 with the model LoRA-fine-tuned on the ICM labels of batches "
        "1..j (needs --batch-size; models kept in batches/NNN/finetuned)",
    )
    finetune_epochs: int = training("epochs", "iterative: epochs per fine-tune")
    finetune_lr: float = training("lr", "iterative: LoRA learning rate")
    finetune_max_steps: int | None = training(
        "max_steps", "iterative: at most this many steps per fine-tune"
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
        1,
        "searches (batches, chains) run at once against the backend",
        min=1,
        max=256,
        resumable=True,
    )
    fixed_labels: str | None = option(
        None,
        "CSV or JSONL of labels a person gave (column human_label, e.g. a filled-in `icm export "
        "--format review`): fixed, never flipped, shown as demonstrations",
    )
    shuffle_groups: bool = option(
        False,
        "cut batches from the groups in a random order (seeded by --seed), as the official "
        "code draws its batch, not in file order; labels.jsonl keeps the input order",
    )
    seed: int = option(0, "random seed: same seed and model, same run", min=0, max=SEED_MAX)
    search: SearchConfig = field(default_factory=SearchConfig)

    def check(self) -> None:
        """Every option in its range, and the ones that must agree with each other."""
        check(self)
        s = self.search
        if s.tmin > s.t0:
            raise ConfigError(f"--tmin ({s.tmin}) must not exceed --t0 ({s.t0})")
        check_report_to(self.report_to)
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if self.base_url and self.backend != "openai":
            # Else the server would be silently ignored and the local model run instead.
            raise ConfigError(
                f"--base-url is for --backend openai, not {self.backend}: add --backend openai"
            )
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


PRESET_RUN: dict[str, dict[str, Any]] = {
    "paper": {"batch_size": 256},
    "official": {"batch_size": 256, "shuffle_groups": True},
}
"""The run options each `--algorithm` sets beside its search options (batches of 256 examples,
which the official code draws as random groups)."""


def preset(name: str) -> RunConfig:
    """The configuration `icm run --algorithm NAME` starts from (see `ALGORITHMS`)."""
    if name not in ALGORITHMS:
        raise ConfigError(f"--algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return RunConfig(search=ALGORITHMS[name](), **PRESET_RUN.get(name, {}))


def preset_differences(name: str) -> str:
    """What `--algorithm NAME` changes from the default, as flags: `--alpha 50, --init random`."""
    cfg, base = preset(name), RunConfig()
    changed = {k: v for k, v in PRESET_RUN.get(name, {}).items() if getattr(base, k) != v}
    changed |= cfg.search.differences()
    return " ".join(_flag(k, v) for k, v in changed.items())


def _flag(name: str, v: object) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(v, bool):
        return flag if v else "--no-" + flag[2:]
    return f"{flag} {v:.5g}" if isinstance(v, float) else f"{flag} {v}"
