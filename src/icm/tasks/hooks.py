"""Named hooks a task spec may call where its data alone cannot say what it means.

A spec (YAML, JSON, or the built-in tasks' own in `builtin.py`) names them:
`consistency.parse: final-answer` reads a claim's key from its text (GSM8K: the final answer of a
worked solution), `expand: gsm8k-solutions` turns rows of another layout into claim rows. A new
hook is one function here and one line in its table."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ..errors import DataError
from .answers import final_answer
from .base import parse_label

Layout = Callable[[list[dict], list[int], str], tuple[list[dict], list[int]]]


def _expand_solutions(
    rows: list[dict], lines: list[int], source: str
) -> tuple[list[dict], list[int]]:
    """GSM8K grade-school-math layout (one row per question, candidate solutions as
    `{solution, is_correct}` fields) into one claim row per solution; claim rows pass through.
    Each claim keeps the row number of its question, for messages."""
    out, out_lines = [], []
    for k, (row, r) in enumerate(zip(rows, lines, strict=True)):
        solved = [name for name, v in row.items() if isinstance(v, dict) and "solution" in v]
        if not solved:
            out.append(row)
            out_lines.append(r)
            continue
        if "question" not in row:
            raise DataError(f"{source}: row {r}: missing field 'question'")
        if not isinstance(row["question"], str):
            raise DataError(f"{source}: row {r}: field 'question' must be text")
        for name in solved:
            sol = row[name]
            if not isinstance(sol["solution"], str):
                raise DataError(f"{source}: row {r}: field '{name}.solution' must be text")
            parse_label(sol.get("is_correct"), source, r, f"{name}.is_correct")
            out.append(
                {
                    "question": row["question"],
                    "choice": sol["solution"],
                    "label": sol.get("is_correct"),
                    "consistency_id": k,
                    "solver": name,
                }
            )
            out_lines.append(r)
    return out, out_lines


KEY_PARSERS: dict[str, Callable[[str], Hashable | None]] = {"final-answer": final_answer}
"""consistency.parse: a key read from the key field's text (None: the claim has no key)."""
LAYOUTS: dict[str, Layout] = {"gsm8k-solutions": _expand_solutions}
"""expand: rows of another layout turned into claim rows, each with the row number of its
source row."""
