"""summary.json as other commands read it back (report, eval, `icm.label`): every field they
use checked for its type and range, as data files are. An edited or damaged summary is one
line naming the file and the field, never a traceback or a figure drawn from a wrong value."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .. import files
from ..errors import RunError
from .checks import DIAGNOSES

Spec = Any
"""A field's type: 'number', 'count', 'text', 'flag', 'any', 'pair' (two numbers), a dict
of fields (a name ending in '?' may be absent), a one-item list (a list of those), or a tuple of
choices (None among them: the field may be null)."""

COST = {"calls": "count", "tokens": "count", "cached_tokens": "count", "seconds": "number"}
CONCEPT = {
    "verdict": "text",
    "text": "text",
    "p": ("number", None),
    "effect": ("number", None),
    "alpha": "number",
    "batches": "count",
}
SUMMARY: dict[str, Spec] = {
    "utility": "number",
    "inconsistencies": "count",
    "examples": "count",
    "batches": "count",
    "chains": "count",
    "searched": "count",
    "searched_share": "number",
    "labels": {"true": "count", "false": "count"},
    "agreement": ("number", None),
    "iterations": "count",
    "accepted": "count",
    "model_calls": "count",
    "tokens": "count",
    "seconds": "number",
    "warnings": ["text"],
    "per_batch": [{"utility": "number", "examples": "count", "per_chain": [{"_": "any"}]}],
}
LATER: dict[str, Spec] = {
    "cost": {"search": COST, "review": COST, "total": COST},
    "wall_seconds": "number",
    "concept": CONCEPT,
    "gold_utility": ("number", None),
    "diagnosis": ({"_": "count"}, None),
    "fresh_order": ({"utility": "number", "gold_utility": "number"}, None),
    "chain_agreement": "number",
    "cached_tokens": "count",
    "cached_share": "number",
    "scores": "count",
    "approximate_scores": "count",
    "approximate_share": "number",
}
"""Fields a summary of an older run may lack; checked when present."""


def problem(value: object, spec: Spec, name: str) -> str | None:
    """What is wrong with `value` as `spec` (None: nothing), naming the field."""
    if isinstance(spec, tuple):
        if value is None and None in spec:
            return None
        return next((w for s in spec if s is not None for w in [problem(value, s, name)]), None)
    if spec == "any":
        return None
    if spec == "flag":
        return None if isinstance(value, bool) else f"'{name}' must be true or false"
    if spec in ("number", "count"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)  # type: ignore[arg-type]
        if spec == "count":
            ok = ok and isinstance(value, int) and value >= 0
        return None if ok else f"'{name}' must be a {'count' if spec == 'count' else 'number'}"
    if spec == "text":
        return None if isinstance(value, str) else f"'{name}' must be text"
    if spec == "pair":
        ok = isinstance(value, list) and len(value) == 2
        ok = ok and not any(problem(v, "number", name) for v in cast(list, value))
        return None if ok else f"'{name}' must be a pair of numbers"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"'{name}' must be a list"
        return next((w for v in value if (w := problem(v, spec[0], name + "[]"))), None)
    if not isinstance(value, dict):
        return f"'{name}' must be an object"

    def inner(k: str) -> str:  # a field's name: top-level fields by their own
        return f"{name}.{k}" if name else k

    if "_" in spec:  # any keys, each value of one type
        return next((w for k, v in value.items() if (w := problem(v, spec["_"], inner(k)))), None)
    for key, s in spec.items():
        k = key.rstrip("?")
        if k not in value:
            if key.endswith("?"):
                continue
            return f"'{inner(k)}' is missing"
        why = problem(value[k], s, inner(k))
        if why:
            return why
    return None


def fields_problem(d: object, fields: dict[str, Spec]) -> str | None:
    """What is wrong with the object `d`, each of whose `fields` must be there."""
    return problem(d, fields, "") if isinstance(d, dict) else "not an object"


def summary_problem(summary: object) -> str | None:
    why = fields_problem(summary, SUMMARY)
    if why:
        return why
    assert isinstance(summary, dict)
    why = next(
        (w for k, s in LATER.items() if k in summary and (w := problem(summary[k], s, k))), None
    )
    needs = {"cached_tokens": "cached_share", "approximate_scores": "approximate_share"}
    needs |= {"chains": "chain_agreement"} if summary["chains"] > 1 else {}
    for given, wanted in needs.items():
        if why is None and summary.get(given) and wanted not in summary:
            why = f"'{wanted}' is missing"
    verdicts = (summary.get("concept") or {}).get("batch_verdicts") if why is None else None
    if verdicts is not None:
        why = problem(verdicts, {"_": "count"}, "concept.batch_verdicts")
    fresh = summary.get("fresh_order") if why is None else None
    for counts in (summary.get("diagnosis"), (fresh or {}).get("diagnosis")):
        why = why or diagnosis_problem(counts, "diagnosis")
    return why


def diagnosis_problem(counts: object, name: str) -> str | None:
    """A diagnosis's verdicts must be ones icm names."""
    if isinstance(counts, dict) and not set(counts) <= set(DIAGNOSES):
        return f"'{name}' must name one of: {', '.join(DIAGNOSES)}"
    return None


def read_checked(path: Path, what: str, why_not: Callable[[object], str | None]) -> dict | None:
    """A JSON object icm wrote (summary.json, eval.json, compare.json), refused in one line
    when `why_not` finds a field wrong; None when the file is not there."""
    if not path.exists():
        return None
    d = files.read_json(path, what)
    why = why_not(d)
    if why:
        raise RunError(f"{path}: {why} (not what icm writes: was it edited?)")
    assert isinstance(d, dict)
    return d


def read_summary(path: Path) -> dict | None:
    """summary.json, checked; None when the run has none yet."""
    return read_checked(path, "run summary", summary_problem)


# -- a search's trace.jsonl, as the report and a resume read it -------------------------------
_SEEN = {
    "U": "number",
    "inconsistencies": "count",
    "labelled": "count",
    "agreement": ("number", None),
}
STEP: dict[str, Spec] = {
    "n": "count",
    "T": "number",
    "delta": ("number", None),
    "accepted": "flag",
    "skipped": "flag",
    **_SEEN,
}
"""A line of the iterations."""
SETTLE: dict[str, Spec] = {"n": "count", "polish": "count", "step": "text", "changed": ["any"]}
SETTLE |= _SEEN
"""A line of settling after the iterations (back to the best state, completion, polish)."""


def read_trace(path: Path) -> list[dict]:
    """trace.jsonl, each line checked (a last line a kill cut short is left out)."""
    rows = files.read_jsonl(path, torn_tail=True)
    for r, row in enumerate(rows, start=1):
        why = fields_problem(row, SETTLE if "polish" in row else STEP)
        if why:
            raise RunError(f"{path}: line {r}: {why} (not what icm writes: was it edited?)")
    return rows
