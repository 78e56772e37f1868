"""The run stage: from a config, a data file and a model to a run folder of labels.

    config.py     RunConfig: every option of a run (`config.json`)
    plan.py       the data, the fixed labels a person gave, and the batch plan (`plan.json`)
    models.py     who searches a batch: one model, or (iterative.py) one fine-tuned per batch
    job.py        one search: checkpointed Algorithm 1, settling, final labels, the review
    chains.py     a batch's chains combined, each row with its confidence
    driver.py     `Run`: the batches and chains, in parallel, merged into labels.jsonl
    folder.py     the run folder: layout, marker, lock, config, plan and what may be removed
    labels.py     a run's labelled rows, as export, training and iterative ICM read them
    checks.py     the warnings a summary gets
    progress.py   what a run reports while it works, and the terminal's bar

Modules below the driver (folder, labels, config) are what export/, train/ and eval/ import;
`Run`, `load_data` and `split` are loaded on first use so that importing those stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"Run": ".driver", "load_data": ".plan", "split": ".plan", "RunConfig": ".config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
