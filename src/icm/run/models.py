"""Who searches a batch: one model for all, or (iterative ICM) one per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..core.model import LabelModel


class Models(Protocol):
    """Hands the driver the model for each batch; `after(b, rows)` gets batch b's labelled rows
    when another batch follows it.

    `sequential`: batch b + 1 needs batch b finished (iterative ICM trains on it)."""

    sequential: bool

    def model_for(self, b: int) -> LabelModel: ...

    def after(self, b: int, rows: list[dict]) -> None: ...

    def names(self, batches: int) -> list[str]:
        """The model that labels each batch, for summary.json."""
        ...


@dataclass
class OneModel:
    """The same model for every batch."""

    model: LabelModel
    name: str
    sequential: bool = False

    def model_for(self, b: int) -> LabelModel:
        return self.model

    def after(self, b: int, rows: list[dict]) -> None:
        pass

    def names(self, batches: int) -> list[str]:
        return [self.name] * batches
