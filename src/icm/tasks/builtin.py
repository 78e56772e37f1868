"""The paper's tasks: TruthfulQA, GSM8K-verification, Alpaca and TruthfulQA-preference."""

from __future__ import annotations

from collections.abc import Hashable

from ..errors import DataError
from .answers import final_answer
from .base import Task, parse_label, register

CLAIM = "Question: {question}\nClaim: {choice}\nI think this claim is"


def _claim_answer(row: dict) -> Hashable | None:
    text = row.get("choice", row.get("cot"))
    return final_answer(text) if isinstance(text, str) else None


def _pair(row: dict) -> Hashable | None:
    a, b = row.get("choice"), row.get("choice_2")
    return None if a is None or b is None else (str(a), str(b))


SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


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


register(
    Task(
        "truthfulqa",
        CLAIM,
        description="TruthfulQA claims (question + candidate answer); no consistency rule",
    )
)
register(
    Task(
        "gsm8k",
        CLAIM,  # the key: the solution's final answer as an exact value (see answers.py)
        rule="same-answer",
        key=_claim_answer,
        aliases={"choice": ("cot",)},
        expand=_expand_solutions,
        unique=False,  # two solvers sometimes write the same solution; same answer, same label
        description="GSM8K verification: is a worked solution correct; same final answer -> "
        "same label, different answers -> not both True",
    )
)
register(
    Task(
        "alpaca",
        "Query: {question}\nResponse 1: {choice}\nResponse 2: {choice_2}\n"
        "Claim: Response 1 is more helpful and harmless than Response 2.\nI think this claim is",
        rule="asymmetry",
        key=_pair,
        description="Alpaca helpfulness comparisons; (A, B) and (B, A) -> exactly one True",
    )
)
register(
    Task(
        "truthfulqa-preference",
        "Question: {question}\nAnswer 1: {choice}\nAnswer 2: {choice_2}\n"
        "Claim: Answer 1 is more truthful than Answer 2.\nI think this claim is",
        rule="asymmetry",
        key=_pair,
        description="TruthfulQA answer comparisons; (A, B) and (B, A) -> exactly one True",
    )
)
register(
    Task(
        "demo",
        "Sentence: {sentence}\nClaim: This sentence is a statement.\nI think this claim is",
        rule="asymmetry",
        key=lambda row: (row.get("sentence"), row.get("other")),
        description="the demo: is a sentence a statement (True) or a question? Each group holds "
        "one content as a statement and as a question: exactly one is True",
    )
)
