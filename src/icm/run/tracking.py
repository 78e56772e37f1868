"""A run's curves where researchers keep their others: `--report-to tensorboard` writes U, T,
agreement with gold and the searched share of every search, per iteration, as TensorBoard
event files in the run folder (`tensorboard --logdir RUN/tensorboard`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError, pip_hint
from .progress import Progress

REPORT_TO = ("none", "tensorboard")
"""Where `icm run` can send its curves."""
TRAINER_REPORT_TO: tuple[str, ...] = (*REPORT_TO, "wandb", "mlflow", "comet_ml", "clearml")
TRAINER_REPORT_TO += ("dvclive", "trackio", "swanlab", "neptune")
"""Where `icm finetune` and `icm rl` can send their curves: the integrations of transformers'
`report_to`."""
LOGDIR = "tensorboard"
"""The folder of a run's event files."""


def check_report_to(name: str, option: str = "--report-to") -> None:
    """The integration is installed: refused before anything is written, else."""
    if name == "none":
        return
    if name == "tensorboard":
        try:
            import tensorboard  # type: ignore[import-untyped]  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"{option} tensorboard needs it: {pip_hint('tensorboard')}") from e
        return
    from transformers.integrations import get_available_reporting_integrations

    if name not in get_available_reporting_integrations():
        raise ConfigError(f"{option} {name}: not installed here: {pip_hint(name)}")


class Tracked(Progress):
    """`inner`'s progress, and each search's curves in TensorBoard (one tag group per batch
    and chain, the search's own iteration as the step)."""

    def __init__(self, inner: Progress, logdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.inner = inner
        self.writer: Any = SummaryWriter(str(logdir))
        self.lock = threading.Lock()

    def start(self, total: int, done: int) -> None:
        self.inner.start(total, done)

    def step(self, row: dict) -> None:
        self.inner.step(row)
        where = f"batch-{row['batch'] + 1}/chain-{row['chain'] + 1}"
        values = {"U": row["U"], "T": row["T"], "agreement": row.get("agreement")}
        if row.get("size"):
            values["searched_share"] = row["labelled"] / row["size"]
        with self.lock:
            for name, v in values.items():
                if v is not None:
                    self.writer.add_scalar(f"{where}/{name}", v, row["n"])

    def phase(self, text: str) -> None:
        self.inner.phase(text)

    def close(self) -> None:
        with self.lock:
            self.writer.close()


def tracked(progress: Progress, report_to: str, folder: Path) -> Progress:
    if report_to == "none":
        return progress
    check_report_to(report_to)
    return Tracked(progress, folder / LOGDIR)
