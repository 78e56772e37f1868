"""`icm.label`: what `icm run` does, from a notebook, in one call.

    result = icm.label("claims.csv", task="truthfulqa", batch_size=24)
    result.labels, result.verdict, result.to_pandas()

The same stage as the command line (batches, chains, settling, the concept test, the review),
with a run folder written only when `out` is given.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from .core.model import LabelModel
from .core.search import SearchConfig
from .errors import ConfigError, DataError
from .run.config import RunConfig, preset
from .run.folder import ROWS, RunFolder, input_files
from .run.labels import read_labels
from .tasks.readers import not_json


@dataclass
class Labelling:
    """What a labelling run found: each row with its ICM fields, and the run's summary."""

    rows: list[dict]
    """The input rows, each with icm_label, icm_confidence, icm_searched and the other fields."""
    summary: dict
    """summary.json: U, the concept test, the review, every cost."""
    folder: Path | None = None
    """The run folder (None: nothing was kept)."""

    @property
    def labels(self) -> list[bool]:
        return [bool(r["icm_label"]) for r in self.rows]

    @property
    def confidence(self) -> list[float | None]:
        return [r.get("icm_confidence") for r in self.rows]

    @property
    def searched(self) -> list[bool]:
        return [bool(r["icm_searched"]) for r in self.rows]

    @property
    def concept(self) -> dict:
        """The concept test over the batches: verdict, p, effect and its stated error rates."""
        return self.summary.get("concept") or {}

    @property
    def verdict(self) -> str | None:
        """'holds', 'no concept' or 'too small to tell'."""
        return self.concept.get("verdict")

    @property
    def warnings(self) -> list[str]:
        return list(self.summary.get("warnings", []))

    @property
    def utility(self) -> float:
        return float(self.summary["utility"])

    @property
    def cost(self) -> dict:
        """Calls, tokens and seconds of the search and the review, apart and in total."""
        return self.summary["cost"]

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError as e:
            raise ConfigError("to_pandas needs pandas: pip install pandas") from e
        return pd.DataFrame(self.rows)

    def to_datasets(self) -> Any:
        """The rows as a Hugging Face `datasets.Dataset` (needs datasets)."""
        try:
            import datasets
        except ImportError as e:
            raise ConfigError("to_datasets needs datasets: pip install datasets") from e
        return datasets.Dataset.from_list(self.rows)

    def __repr__(self) -> str:
        s = self.summary
        true = sum(self.labels)
        agree = s.get("agreement")
        lines = [
            f"Labelling({len(self.rows)} rows: {true} True / {len(self.rows) - true} False, "
            f"U={s['utility']:.2f}, searched {s['searched_share']:.0%}"
            + ("" if agree is None else f", agreement with gold {agree:.3f}")
            + ")",
            f"  concept test: {self.concept.get('text', 'not run')}",
            f"  cost: {self.cost['total']['calls']} calls, {self.cost['total']['tokens']} tokens, "
            f"{s['wall_seconds']:.1f} s",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.folder:
            lines.append(f"  folder: {self.folder}")
        return "\n".join(lines)


def label(
    data: str | Path | Sequence[dict] | Any,
    task: str = "truthfulqa",
    model: str | LabelModel = "default",
    out: str | Path | None = None,
    overwrite: bool = False,
    algorithm: str = "default",
    progress: bool = False,
    **options: Any,
) -> Labelling:
    """Label `data` (a path `icm run --data` takes, or a list of row dicts) as `icm run` does.

    `model`: a name `--model` takes, or a `LabelModel` already built (e.g. `TransformersModel`).
    `out`: keep the run folder there (resumable with `icm run --resume`); else nothing is kept.
    `options`: any `icm run` option by its field name (`batch_size=24`, `chains=3`, `seed=1`,
    `alpha=5.0`, `columns=["question", "choice"]`, `field={"choice": "answer"}`); `algorithm`:
    the preset they start from."""
    cfg = _config(task, model, algorithm, options)
    with tempfile.TemporaryDirectory(prefix="icm-") as tmp:
        rows = None if isinstance(data, str | Path) else _rows(data)
        if rows is not None:
            files.write_jsonl(Path(tmp) / ROWS, rows)  # read back as a JSONL file is
        cfg.data = str(Path(tmp) / ROWS if rows is not None else data)
        built = model if isinstance(model, LabelModel) else None
        where = Path(out) if out is not None else Path(tmp) / "run"
        return _label(cfg, built, where, out is not None, overwrite, progress, rows)


def _label(
    cfg: RunConfig,
    model: LabelModel | None,
    out: Path,
    keep: bool,
    overwrite: bool,
    progress: bool,
    rows: list[dict] | None,
) -> Labelling:
    from .run.driver import Run
    from .run.plan import prepare
    from .run.progress import Bar

    prepared = prepare(cfg, model)  # bad input is refused before anything is written
    inputs = input_files(cfg)
    if keep and rows is not None:  # the run folder keeps the rows, so it can be resumed
        cfg.data = str(out / ROWS)
    folder = RunFolder(out)
    folder.create(cfg, overwrite, inputs)
    run = Run(folder, cfg)
    if keep and rows is not None:
        files.write_jsonl(out / ROWS, rows)
    summary = run.execute(progress=Bar() if progress else None, prepared=prepared)
    labelled = read_labels(folder)
    return Labelling(labelled, summary, run.path if keep else None)


def _config(task: str, model: str | LabelModel, algorithm: str, options: dict) -> RunConfig:
    cfg = preset(algorithm)
    options = _as_cli(options)
    top = {f.name for f in dataclasses.fields(RunConfig)} - {"search", "data", "task", "model"}
    inner = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(options) - top - inner)
    if unknown:
        raise ConfigError(
            f"icm.label: no option {', '.join(unknown)}; options are the fields of RunConfig "
            "and SearchConfig (icm run --help)"
        )
    cfg = dataclasses.replace(
        cfg,
        task=task,
        model=model if isinstance(model, str) else cfg.model,
        **{k: v for k, v in options.items() if k in top},
    )
    cfg.search = dataclasses.replace(cfg.search, **{k: v for k, v in options.items() if k in inner})
    return cfg


def _as_cli(options: dict) -> dict:
    """The Python forms of two options as the command line writes them: `columns` as a list,
    `field` as a {FIELD: COLUMN} dict."""
    out = dict(options)
    if isinstance(out.get("columns"), list | tuple):
        out["columns"] = ",".join(map(str, out["columns"]))
    if isinstance(out.get("field"), dict):
        out["field"] = [f"{k}={v}" for k, v in out["field"].items()]
    return out


def _rows(data: Any) -> list[dict]:
    """Rows given in memory: a list of dicts, a pandas DataFrame or a `datasets.Dataset`."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a DataFrame
        data = data.to_dict("records")
    elif hasattr(data, "to_list"):  # a datasets.Dataset
        data = data.to_list()
    if isinstance(data, dict | bytes) or not isinstance(data, Iterable):
        raise ConfigError(
            "icm.label: data must be a path, a list of row dicts, a pandas DataFrame or a "
            f"datasets.Dataset, got {type(data).__name__}"
        )
    rows = list(data)
    for r, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ConfigError(f"icm.label: row {r}: expected a dict, got {type(row).__name__}")
        for name, value in row.items():
            why = not_json(value) if isinstance(name, str) else "a column name must be text"
            if why:
                raise DataError(f"icm.label: row {r}: column {name!r}: {why}")
    return rows


__all__ = ["Labelling", "label"]
