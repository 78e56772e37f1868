"""A batch's chains combined into its labelled rows, each row with its confidence."""

from __future__ import annotations

import numpy as np

from ..core.consistency import Constraint, Structure, violations
from ..tasks import Dataset
from ..tasks.base import agreement


def combine(
    finals: list[dict],
    data: Dataset,
    cons: list[Constraint],
    fixed: dict[int, int],
    rule: str = "best-u",
) -> tuple[list[dict], dict]:
    """One batch's labelled rows from its chains, with each row's confidence: the mean over
    chains of the probability (sigmoid of the log-odds) that chain gives the row's label, which
    is low where chains disagree and where they agree weakly.

    best-u: the labels of the chain whose final labels (complete and consistent) have the
    highest U, the objective ICM maximises (restarts of one search). vote: each row's majority
    (ties: the best chain), made consistent again."""
    best = max(range(len(finals)), key=lambda k: final_utility(finals[k]))
    votes = np.array([f["final"] for f in finals])  # (chains, rows)
    logodds = np.array([f["logodds"] for f in finals])
    if rule == "vote":
        share = votes.mean(axis=0)
        labels = [int(s > 0.5) if s != 0.5 else votes[best][i] for i, s in enumerate(share)]
        # > 0: True. The majority's side, by how many chains gave it, then by their confidence
        # (which alone could be below 1/2 and turn a majority over where no rule asks it).
        strength = np.abs(2 * share - 1) + 1e-3 * confidence(labels, logodds)
        labels = Structure(cons, len(labels), fixed).decode((2 * np.array(labels) - 1) * strength)
        searched = [all(f["labels"][i] >= 0 for f in finals) for i in range(len(labels))]
        shown = logodds.mean(axis=0)
    else:
        labels = [int(y) for y in votes[best]]
        searched = [y >= 0 for y in finals[best]["labels"]]
        shown = logodds[best]
    conf = confidence(labels, logodds)
    conf[list(fixed)] = 1.0  # a person's label
    rows = [
        {
            **row,
            "icm_label": bool(y),
            "icm_logodds": float(lo),
            "icm_confidence": float(c),
            "icm_searched": s,
            **({"icm_fixed": True} if i in fixed else {}),
        }
        for i, (row, y, lo, c, s) in enumerate(
            zip(data.rows, labels, shown, conf, searched, strict=True)
        )
    ]
    return rows, batch_summary(finals, data, cons, labels, searched, best)


def final_utility(final: dict) -> float:
    """U of a chain's final labels (a final.json from before it was recorded: U of the labels
    its search chose, the same for a search that labelled every example)."""
    return final.get("final_utility", final["utility"])


def confidence(labels: list[int], logodds: np.ndarray) -> np.ndarray:
    """Per row, the chains' mean probability of the row's label (logodds: chains x rows)."""
    signed = np.where(np.array(labels) == 1, logodds, -logodds)
    return (1 / (1 + np.exp(-signed))).mean(axis=0)


def batch_summary(
    finals: list[dict],
    data: Dataset,
    cons: list[Constraint],
    labels: list[int],
    searched: list[bool],
    best: int,
) -> dict:
    """What a batch's summary says of its labels and its chains."""
    votes = np.array([f["final"] for f in finals])
    agree = (votes == np.array(labels)).mean(axis=0)
    pairwise = [
        float((votes[a] == votes[b]).mean())
        for a in range(len(finals))
        for b in range(a + 1, len(finals))
    ]
    return {
        "examples": len(data),
        "searched": int(sum(searched)),
        "inconsistencies": len(violations(cons, labels)),
        "labels": {"true": int(sum(labels)), "false": int(len(labels) - sum(labels))},
        "agreement": agreement(labels, data.gold),
        "chains": len(finals),
        "best_chain": best,
        "chain_agreement": float(np.mean(pairwise)) if pairwise else 1.0,
        "unanimous": float((agree == 1).mean()),
        "utility": final_utility(finals[best]),
        "per_chain": [
            {k: v for k, v in f.items() if k not in ("labels", "final", "logodds")}
            | {"searched": int(sum(y >= 0 for y in f["labels"]))}
            | {"agreement": agreement(f["labels"], data.gold)}
            for f in finals
        ],
    }
