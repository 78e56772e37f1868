"""Is there a concept to find? A gold-free test of the labelling a search found, with known error
rates.

A model that holds the concept behind a set of claims finds the right labelling more mutually
predictable than labellings that carry no concept; a model that does not (the paper's poems that
mention the sun) finds nothing that stands out. The test scores `m` null labellings (random
labellings that obey the rule and have as many True labels as the one found: same data, same
rule, no concept) and the labelling found, all under a demonstration order the search never saw,
and asks how far above the nulls the found one lies.

Why a fresh order: much of U's variation between labellings is the order the demonstrations
happen to come in, and the search picked its labelling for its U under its own order; under
another order that luck is gone and a concept still stands out.

The statistic is the prediction t of the found labelling against the nulls,
t = (U - mean) / (sd * sqrt(1 + 1/m)), which for a labelling exchangeable with the nulls (U
normal) follows Student's t with m - 1 degrees of freedom: its p-value is exact at any m, where
a z against the normal quantile with sd from 16 nulls passes 6.6% of such labellings, not 5%.

Three verdicts per batch and per run:
- holds: p <= ALPHA. A labelling with no concept is called so with probability ALPHA.
- no concept: the found labelling is less than MIN_EFFECT null sds above the nulls, with
  confidence 1 - BETA (the upper end of the one-sided interval of its effect lies below
  MIN_EFFECT). A concept at least that strong is called so with probability at most BETA.
- too small to tell: neither. A batch too small to separate a concept from noise says this
  rather than guess; more claims per batch (or more batches) decide it.

Batches are combined by Stouffer's method (each batch's p as a normal z, summed over sqrt(B)),
and the run's effect is the batches' mean, its interval from theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .consistency import Structure
from .model import metered
from .objective import Objective

ALPHA = 0.01
"""The false-pass rate: a labelling with no concept behind it is called "holds" this often. The
labelling tested was chosen by a search, which the nulls were not; a small rate leaves room for
what of that choice carries over to a fresh order (measured: benchmarks/bench_verdict.py)."""
BETA = 0.05
"""The false-fail rate: a concept at least MIN_EFFECT strong is called "no concept" at most this
often."""
MIN_EFFECT = 2.5
"""The smallest separation from the null labellings (in their sds, under a fresh order) that
counts as a concept; "no concept" is said only when the labels are surely below it. Concepts
the default model holds showed 1.5 to 5 at 12 claims, and more with more claims."""
NULLS = (8, 16)
"""Null labellings scored per batch: N // 2 within these bounds (well under the search's own
cost at 12 claims, a fraction of it from 32 on; benchmarks/bench_verdict.py measures it)."""
HOLDS, NONE, SMALL = "holds", "no concept", "too small to tell"


def nulls_for(n: int) -> int:
    """How many null labellings a batch of `n` claims gets."""
    lo, hi = NULLS
    return max(lo, min(hi, n // 2))


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


@dataclass
class Verdict:
    """One test's numbers: the effect (found labelling above the nulls, in null sds), its p and
    the upper end of its one-sided 95% interval, and what they say."""

    effect: float | None
    p: float | None
    upper: float | None
    samples: int

    @property
    def verdict(self) -> str:
        if self.p is None or self.upper is None:
            return SMALL
        if self.p <= ALPHA:
            return HOLDS
        return NONE if self.upper < MIN_EFFECT else SMALL

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "holds": self.verdict == HOLDS,
            "p": self.p,
            "effect": self.effect,
            "effect_upper": self.upper,
            "samples": self.samples,
            "alpha": ALPHA,
            "beta": BETA,
            "min_effect": MIN_EFFECT,
            "text": verdict_text(self.verdict, self.effect, self.p, self.upper),
        }


def concept_test(
    objective: Objective,
    structure: Structure,
    labels: Sequence[int],
    rng: np.random.Generator,
    scored_so_far: Callable[[int, int], None] | None = None,
) -> dict:
    """U of `labels` against null labellings of the same shape, under `objective` (a
    demonstration order the search did not use). `scored_so_far(done, total)` hears of each
    labelling scored."""
    nulls = draw_nulls(structure, labels, nulls_for(len(labels)), rng)
    with metered() as used:
        scored = objective.evaluate_all([list(labels), *nulls], scored_so_far)
    found, us = scored[0].utility, np.array([ev.utility for ev in scored[1:]])
    out = {"utility": found, "nulls": [float(u) for u in us], "null_mean": None, "null_sd": None}
    out["cost"] = {"calls": used.calls, "tokens": used.tokens}
    if len(us) < 3 or float(us.std(ddof=1)) <= 0:  # the rule leaves too little to compare
        return out | Verdict(None, None, None, len(us)).to_json()
    out |= {"null_mean": float(us.mean()), "null_sd": float(us.std(ddof=1))}
    return out | predict(found, us).to_json()


def draw_nulls(
    structure: Structure, labels: Sequence[int], m: int, rng: np.random.Generator
) -> list[list[int]]:
    """Up to `m` distinct null labellings, none of them `labels` itself (fewer where the rule
    allows fewer: 3 pairs have 8 labellings in all)."""
    seen = {tuple(labels)}
    out: list[list[int]] = []
    for _ in range(20 * m):
        if len(out) == m:
            break
        x = null_labelling(structure, sum(labels), rng)
        if tuple(x) not in seen:
            seen.add(tuple(x))
            out.append(x)
    return out


def predict(found: float, nulls: np.ndarray) -> Verdict:
    """The prediction t of `found` against the nulls, as an effect in null sds with its p and
    the upper end of its one-sided 1 - BETA interval (Student's t with m - 1 degrees of
    freedom)."""
    m = len(nulls)
    sd = float(nulls.std(ddof=1))
    scale = math.sqrt(1 + 1 / m)
    effect = (found - float(nulls.mean())) / sd
    t = effect / scale
    upper = effect + t_quantile(1 - BETA, m - 1) * scale
    return Verdict(effect, t_sf(t, m - 1), upper, m)


def combine_tests(tests: Sequence[dict]) -> dict:
    """The run's verdict from its batches': Stouffer's z over their p-values, the mean effect
    and the upper end of its interval (the batches' own, over sqrt(B))."""
    tested = [t for t in tests if t.get("p") is not None]
    counts = {v: sum(t["verdict"] == v for t in tests) for v in (HOLDS, NONE, SMALL)}
    base = {"batches": len(tests), "batch_verdicts": counts}
    if not tested:
        return base | Verdict(None, None, None, 0).to_json() | {"batches": len(tests)}
    normal = NormalDist()
    z = sum(normal.inv_cdf(1 - min(max(t["p"], 1e-300), 1 - 1e-16)) for t in tested)
    z /= math.sqrt(len(tested))
    effect = float(np.mean([t["effect"] for t in tested]))
    margin = float(np.mean([t["effect_upper"] - t["effect"] for t in tested]))
    upper = effect + margin / math.sqrt(len(tested))
    samples = sum(t["samples"] for t in tested)
    return Verdict(effect, 1 - normal.cdf(z), upper, samples).to_json() | base


def verdict_text(verdict: str, effect: float | None, p: float | None, upper: float | None) -> str:
    """The verdict in one line, with its numbers and its error rate."""
    if effect is None or p is None or upper is None:
        return f"{SMALL}: the rule leaves too few other labellings to compare with"
    numbers = f"{effect:.1f} null sds above random labellings under a fresh order, p = {p:.3g}"
    if verdict == HOLDS:
        return f"holds ({numbers}; labels with no concept pass {ALPHA:.0%} of the time)"
    if verdict == NONE:
        return (
            f"no concept ({numbers}; at most {upper:.1f} sds with {1 - BETA:.0%} confidence, "
            f"below the {MIN_EFFECT:g} that counts as a concept)"
        )
    return f"{SMALL} ({numbers}; a larger batch decides between a concept and none)"


# -- Student's t, for the p-values and intervals above (no SciPy) ------------------------------
def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t > 0 else 1 - tail


def t_quantile(q: float, df: int) -> float:
    """The `q` quantile of Student's t (bisection on `t_sf`)."""
    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - t_sf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return max(0.0, min(1.0, x))
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _fraction(a, b, x) / a
    return 1 - front * _fraction(b, a, 1 - x) / b


def _fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) by the modified Lentz method."""
    tiny = 1e-300
    d = 1 - (a + b) * x / (a + 1)
    c, d = 1.0, 1 / (d if abs(d) > tiny else tiny)
    h = d
    for k in range(1, 300):
        for num in (
            k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k)),
            -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1)),
        ):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h
