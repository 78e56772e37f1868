"""The label matrix of weak supervision: one column per chain, one row per labelled row.

Snorkel's convention (`LabelModel.fit(L)`): a chain is a labelling function; a cell is 1 (True),
0 (False), or -1 where the chain abstained, i.e. its search never labelled the row (the final
labels of such rows are inferred, not searched). A row of batch b is voted on only by the chains
of batch b, so columns are `chain_0` ... `chain_{C-1}` over every batch.
"""

from __future__ import annotations

from ..errors import DataError, RunError
from ..files import read_json
from ..run.folder import FINAL, RunFolder
from ..run.labels import Labelled
from .records import export_format

ABSTAIN = -1


@export_format("label-matrix")
def label_matrix(data: Labelled, _: int | None = None) -> list[dict]:
    """{icm_row, icm_batch, chain_0, ..., chain_{C-1}} for every row of the run's labels."""
    if data.folder is None:
        raise DataError(f"{data.source}: the label matrix is read from a run folder's chains")
    run = RunFolder(data.folder)
    cfg, plan = run.read_config(), run.read_plan()
    if plan is None:
        raise RunError(f"{run.path}: no plan.json: not a run icm finished")
    votes: dict[int, tuple[int, list[int]]] = {}
    for b, rows in enumerate(plan.batches):
        chains = [searched_labels(run, b, c, len(rows)) for c in range(cfg.chains)]
        for k, i in enumerate(rows):
            votes[i] = (b, [chain[k] for chain in chains])
    out = []
    for i in data.rows_in_file:
        if i not in votes:
            raise RunError(f"{run.path}: row {i + 1} of the labels is in no batch of plan.json")
        b, cells = votes[i]
        out.append({"icm_row": i, "icm_batch": b} | {f"chain_{c}": y for c, y in enumerate(cells)})
    return out


def searched_labels(run: RunFolder, b: int, c: int, rows: int) -> list[int]:
    """What chain c of batch b searched: 0/1 per row, ABSTAIN where it never labelled it."""
    path = run.chain(b, c) / FINAL
    if not path.exists():
        raise RunError(f"{path}: missing: let the run finish (or --resume it)")
    final = read_json(path, "search result")
    labels = final.get("labels") if isinstance(final, dict) else None
    if (
        not isinstance(labels, list)
        or len(labels) != rows
        or not all(type(y) is int and y in (ABSTAIN, 0, 1) for y in labels)
    ):
        raise RunError(f"{path}: 'labels' is not {rows} labels of -1, 0 or 1 (not what icm wrote)")
    return labels
