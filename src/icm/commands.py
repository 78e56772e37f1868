"""The options of each subcommand that belong to the command line itself (where its output goes,
whether to resume, overwrite or show progress), as dataclasses like every other option: the
field help is the CLI help. The options that say what is computed live in the config dataclasses
(`RunConfig`, `SearchConfig`, the backends' options, `EvalConfig`, `TrainConfig`, `RLConfig`,
`CompareConfig`), which `config.json` and `icm_train.json` record.

Field metadata beyond `options.option`'s: `positional` (an argument, not a flag), `required`,
`metavar`, and `off` (the help of `--no-X` for a field that is on by default)."""

from __future__ import annotations

from dataclasses import dataclass

from .core.search import ALGORITHMS
from .options import option
from .run.config import preset_differences

DEMO_CLAIMS, DEMO_HELD_OUT = 24, 32
"""The demo's claims labelled and held out. 24: the concept test tells the demo concept from
none at 24 claims on 7 of 10 seeds (never "no concept"), and at 12 is mostly too small to tell;
48 claims take about seven times as long (benchmarks/bench_verdict.py)."""

PROGRESS = {"off": "no progress bar"}


def export_formats() -> list[str]:
    """The export formats registered (read when the parser is built: `export` loads lazily)."""
    from .export import FORMATS

    return list(FORMATS)


@dataclass
class RunCommand:
    out: str | None = option(None, "run folder to create")
    resume: str | None = option(None, "run folder to continue")
    overwrite: bool = option(
        False, "replace a run folder icm made (only icm's files in it are removed)"
    )
    progress: bool = option(True, "the progress bar", **PROGRESS)
    algorithm: str = option(
        "default",
        "the options to start from (any option below changes them): default (zero-shot "
        "start, consistent moves, polish; see the README); paper (Algorithms 1 and 2 with the "
        f"paper's objective and constants: {preset_differences('paper')}); official (the "
        f"authors' released code: {preset_differences('official')})",
        choices=tuple(ALGORITHMS),
    )


@dataclass
class DemoCommand:
    out: str = option("runs/demo", "run folder (default: runs/demo)")
    model: str = option("default", "model (default: embedded SmolLM2-135M)")
    seed: int = option(0, "random seed (default: 0)")
    claims: int = option(
        DEMO_CLAIMS,
        f"claims to label, an even number (default: {DEMO_CLAIMS})",
        min=4,
        max=400,
    )
    held_out: int = option(
        DEMO_HELD_OUT,
        f"held-out claims to evaluate on (default: {DEMO_HELD_OUT})",
        min=2,
        max=400,
    )
    score: str = option(
        "mean-logodds",
        "sum-logprob or mean-logodds (default: mean-logodds, see the README)",
        choices=("sum-logprob", "mean-logodds"),
    )
    progress: bool = option(True, "the progress bar", **PROGRESS)


@dataclass
class EvalCommand:
    run: str = option("", "run folder whose labels.jsonl gives the demos", required=True)
    out: str | None = option(None, "folder for eval.json, eval.md, eval.png (default: the run)")
    overwrite: bool = option(False, "replace eval files icm did not write")


@dataclass
class ReportCommand:
    run: str = option("", "run folder", positional=True)
    out: str | None = option(None, "HTML file to write (default: RUN/report.html)")
    overwrite: bool = option(False, "replace a file icm did not write")


@dataclass
class ExportCommand:
    run: str = option("", "run folder", positional=True)
    format: str = option("", "record layout", required=True, choices=export_formats)
    out: str = option("", ".jsonl, .json, .csv, .parquet, else a datasets folder", required=True)
    searched_only: bool = option(False, "only labels the search chose")
    least_certain: int | None = option(
        None,
        "with --format review: the K rows ICM is least sure of (default: all, least sure first)",
        metavar="K",
    )
    overwrite: bool = option(False, "replace an existing output")


@dataclass
class FinetuneCommand:
    run: str = option("", "run folder", positional=True)
    out: str = option("", "model folder to write (merged weights)", required=True)
    reward_model: bool = option(False, "train a reward model on pairs")
    model: str | None = option(None, "base model (default: the run's model)")
    searched_only: bool = option(False, "only labels the search chose")
    overwrite: bool = option(False, "replace a model folder icm trained before")


@dataclass
class RLCommand:
    out: str | None = option(None, "folder to write the policy (and its checkpoints) to")
    resume: str | None = option(None, "folder of a stopped `icm rl` to go on with")
    overwrite: bool = option(False, "replace a folder icm trained before")
    progress: bool = option(True, "step lines", off="no step lines")


@dataclass
class CompareCommand:
    a: str = option(
        "", "policy A (anything --model loads, e.g. an `icm rl` folder)", positional=True
    )
    b: str = option("", "policy B, e.g. default (the base policy)", positional=True)
    out: str = option(
        "", "folder for compare.json, .md, .png (a run folder is fine)", required=True
    )
    overwrite: bool = option(False, "replace files icm did not write")
