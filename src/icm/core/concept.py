"""Is there a concept to find? A gold-free test of the labelling a search found.

A model that holds the concept behind a set of claims finds the right labelling more mutually
predictable than labellings that carry no concept; a model that does not (the paper's poems that
mention the sun) finds nothing that stands out. The test scores random labellings that obey the
rule and have as many True labels as the one found (the null: same data, same rule, no concept)
and says how far above them the found labelling lies, in standard deviations of the null (z).

The labelling found is the best of many the search compared, so under the orders of
demonstrations the search scored it with it lies above the null even where there is nothing to
find (on a small batch, about as far as a real concept). Much of U's variation between
labellings is a matter of the order the demonstrations come in, and a labelling picked for its U
is picked partly for that. So the test scores the found labelling and the null under a fresh
order, one the search never saw: there a concept still stands out, and a labelling that was only
lucky in its order does not. It passes when z is above Z_BAR (one-sided 5%).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .consistency import Structure
from .search import Search

SAMPLES = 16
"""Null labellings scored per batch."""
Z_BAR = 1.645
"""The one-sided 5% point of the standard normal: z above it passes."""


def null_labelling(structure: Structure, true: int, rng: np.random.Generator) -> list[int]:
    """A random labelling that obeys the rule, keeps the fixed labels and has (as near as the
    rule allows) `true` True labels: random margins decoded under the rule, shifted until the
    count fits."""
    margin = rng.normal(size=structure.n)
    lo, hi = -50.0, 50.0
    best = structure.decode(margin)
    for _ in range(40):
        shift = (lo + hi) / 2
        labels = structure.decode(margin + shift)
        if abs(sum(labels) - true) < abs(sum(best) - true):
            best = labels
        if sum(labels) == true:
            return labels
        lo, hi = (shift, hi) if sum(labels) < true else (lo, shift)
    return best


def concept_test(
    search: Search, labels: Sequence[int], rng: np.random.Generator, samples: int = SAMPLES
) -> dict:
    """How far U of `labels` lies above U of `samples` null labellings, under a demonstration
    order the search did not use."""
    fresh = search.reordered(search.cfg.orders)
    found = fresh.evaluate(list(labels)).utility
    nulls = [null_labelling(search.structure, sum(labels), rng) for _ in range(samples)]
    us = np.array([ev.utility for ev in fresh.evaluate_all(nulls)])
    sd = float(us.std(ddof=1)) if len(us) > 1 else 0.0
    z = (found - float(us.mean())) / sd if sd > 0 else None
    return {
        "utility": found,
        "null_mean": float(us.mean()),
        "null_sd": sd,
        "z": z,
        "bar": Z_BAR,
        "above_null": float((us < found).mean()),
        "samples": samples,
        "holds": None if z is None else bool(z > Z_BAR),
    }
