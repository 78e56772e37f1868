"""The paper's tasks (TruthfulQA, GSM8K-verification, Alpaca, TruthfulQA-preference) and the
demo, as specs: the same fields a custom YAML spec has (`custom.py`), GSM8K's answer key and
solutions layout through the named hooks of `hooks.py`."""

from __future__ import annotations

from .base import register
from .custom import task_from_spec

CLAIM = "Question: {question}\nClaim: {choice}\nI think this claim is"
PAIR = {"rule": "asymmetry", "key": ["choice", "choice_2"]}

SPECS: list[dict] = [
    {
        "name": "truthfulqa",
        "template": CLAIM,
        "group": "consistency_id",
        "description": "TruthfulQA claims (question + candidate answer); no consistency rule",
    },
    {
        "name": "gsm8k",
        "template": CLAIM,
        "group": "consistency_id",
        # The key: the solution's final answer as an exact value (see answers.py).
        "consistency": {"rule": "same-answer", "key": "choice", "parse": "final-answer"},
        "aliases": {"choice": ["cot"]},
        "expand": "gsm8k-solutions",
        "unique": False,  # two solvers sometimes write the same solution; same answer, same label
        "description": "GSM8K verification: is a worked solution correct; same final answer -> "
        "same label, different answers -> not both True",
    },
    {
        "name": "alpaca",
        "template": "Query: {question}\nResponse 1: {choice}\nResponse 2: {choice_2}\n"
        "Claim: Response 1 is more helpful and harmless than Response 2.\nI think this claim is",
        "group": "consistency_id",
        "consistency": PAIR,
        "description": "Alpaca helpfulness comparisons; (A, B) and (B, A) -> exactly one True",
    },
    {
        "name": "truthfulqa-preference",
        "template": "Question: {question}\nAnswer 1: {choice}\nAnswer 2: {choice_2}\n"
        "Claim: Answer 1 is more truthful than Answer 2.\nI think this claim is",
        "group": "consistency_id",
        "consistency": PAIR,
        "description": "TruthfulQA answer comparisons; (A, B) and (B, A) -> exactly one True",
    },
    {
        "name": "demo",
        "template": "Sentence: {sentence}\nClaim: This sentence is a statement.\n"
        "I think this claim is",
        "group": "consistency_id",
        "consistency": {"rule": "asymmetry", "key": ["sentence", "other"]},
        "description": "the demo: is a sentence a statement (True) or a question? Each group "
        "holds one content as a statement and as a question: exactly one is True",
    },
]

for _spec in SPECS:
    register(task_from_spec(_spec, f"built-in task {_spec['name']}", _spec["name"]))
