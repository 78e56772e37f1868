"""Training records from ICM labels, in the column layouts TRL's trainers read.

Only ICM labels go out: the task's gold field never does, and the pair and claim formats carry
nothing but their own columns (rows may hold other human labels, e.g. Alpaca's `candidate_label`).

Formats (TRL's names for the dataset types in brackets):
  sft       prompt, completion     [prompt-completion]: the ICM prompt and its label word
  sft-chat  messages               [conversational language modeling]: user prompt, assistant label
  kto       prompt, completion, label  [unpaired preference]: a claim and whether ICM holds it true
  dpo, rm   prompt, chosen, rejected   [preference, explicit prompt]: the same columns serve
            DPOTrainer and RewardTrainer
  labels    the run's rows without the gold field, with icm_label
  review    the least certain rows first, for a person to label: icm_row, the task's fields,
            icm_label, icm_confidence and an empty human_label (`icm run --fixed-labels` reads it)
  label-matrix  one column per chain for weak-supervision tools (matrix.py)
  label-studio, argilla  the review rows as those tools import them (tools.py)

Pairs come straight from comparison tasks (rule asymmetry: ICM True means the first response is
better; a pair whose two orders ICM labels alike is contradictory and left out), and from claim
groups otherwise: every claim ICM labelled True against every claim labelled False of the same
question. In kto and the pair formats the prompt is the task template up to the claim (or the first
response) and the completion is the claim itself, so prompt + completion reads as the template does.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from ..core.consistency import get_rule
from ..errors import DataError
from ..run.labels import Labelled
from ..tasks import Task

Formatter = Callable[[Labelled, "int | None"], list[dict]]
"""A format: (the run's labelled rows, --least-certain) -> its records."""
FORMATS: dict[str, Formatter] = {}
"""Every export format by name; a module adds one with `@export_format(name)`."""


def export_format(name: str) -> Callable[[Formatter], Formatter]:
    def add(fn: Formatter) -> Formatter:
        FORMATS[name] = fn
        return fn

    return add


def records(data: Labelled, fmt: str, least_certain: int | None = None) -> list[dict]:
    """The records of one format; raises when the format yields none (e.g. no pair)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = FORMATS[fmt](data, least_certain)
    if not out and fmt not in ("review", "labels", "label-studio", "argilla"):
        why = ", ".join(f"{n} {k}" for k, n in data.skipped.items()) or "no pairable claims"
        raise DataError(f"{data.source}: the {fmt} export has no records ({why})")
    return out


export_format("sft")(lambda data, _: list(_sft(data, chat=False)))
export_format("sft-chat")(lambda data, _: list(_sft(data, chat=True)))
export_format("kto")(lambda data, _: _kto(data))
export_format("dpo")(lambda data, _: _pairs(data))
export_format("rm")(lambda data, _: _pairs(data))
export_format("labels")(
    lambda data, _: [{**row, "icm_label": y} for row, y in zip(data.rows, data.labels, strict=True)]
)
export_format("review")(lambda data, k: review(data, k))


def review(data: Labelled, k: int | None) -> list[dict]:
    """The `k` rows ICM is least sure of (all, when `k` is None), least certain first, with the
    fields a person needs to judge the claim and an empty `human_label` to fill in. Rows a
    person already labelled (icm_fixed) are left out."""
    task = data.task
    shown = [task._alias(data.rows[0], f) for f in task.fields]
    shown += [task.group] if task.group and task.group not in shown else []
    order = sorted(
        (i for i in range(len(data.rows)) if not data.fixed[i]),
        key=lambda i: (1.0 if data.confidence[i] is None else data.confidence[i], i),
    )
    return [
        {
            "icm_row": data.rows_in_file[i],
            **{f: data.rows[i].get(f) for f in shown},
            "icm_label": data.labels[i],
            "icm_confidence": data.confidence[i],
            "human_label": "",
        }
        for i in order[:k]
    ]


def prompts(data: Labelled) -> list[str]:
    """The zero-shot ICM prompt of every row, exactly as the search builds it."""
    built = data.task.build(data.rows, data.source)
    return [data.task.fmt.prefix + ex.prompt for ex in built.examples]


def _sft(data: Labelled, chat: bool):
    words = data.task.fmt.label_words
    for prompt, y in zip(prompts(data), data.labels, strict=True):
        word = words[int(y)]
        if chat:
            yield {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": word.strip()},
                ]
            }
        else:
            yield {"prompt": prompt, "completion": word}


def response_fields(task: Task) -> list[str]:
    """The template fields that hold what is judged: two for a comparison, else the last one."""
    if get_rule(task.rule).pair_key:
        pair = getattr(task.key, "fields", None) or task.fields[-2:]
        if len(pair) == 2 and all(f in task.fields for f in pair):
            return list(pair)
    return task.fields[-1:]


def _split(data: Labelled, r: int, names: list[str]) -> tuple[str, list[str]]:
    """(prompt, completions): the template rendered up to the first response field, and each
    response with the whitespace before it (TRL's convention: the prompt ends without a space)."""
    row, task, fmt = data.rows[r], data.task, string.Formatter()
    head = task.fmt.prefix
    for literal, name, spec, conv in fmt.parse(task.template):
        head += literal
        if name is None:
            continue
        if name in names:
            break
        value = task._field(row, name, data.source, r + 1)
        head += fmt.format_field(fmt.convert_field(value, conv), spec or "")
    prompt = head.rstrip()
    gap = head[len(prompt) :]
    return prompt, [gap + task._field(row, n, data.source, r + 1) for n in names]


def _kto(data: Labelled) -> list[dict]:
    names = response_fields(data.task)
    if len(names) == 2:
        out = []
        for p in _pairs(data):
            out.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
            out.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
        return out
    rows = []
    for r, y in enumerate(data.labels):
        prompt, (claim,) = _split(data, r, names)
        rows.append({"prompt": prompt, "completion": claim, "label": y})
    return rows


def _pairs(data: Labelled) -> list[dict]:
    names = response_fields(data.task)
    return _comparison_pairs(data, names) if len(names) == 2 else _claim_pairs(data, names)


def _comparison_pairs(data: Labelled, names: list[str]) -> list[dict]:
    seen: dict[tuple[str, str, str], None] = {}
    for r, y in enumerate(data.labels):
        prompt, (first, second) = _split(data, r, names)
        seen[(prompt, first, second) if y else (prompt, second, first)] = None
    out, contradictions = [], 0
    for prompt, chosen, rejected in seen:
        if (prompt, rejected, chosen) in seen:
            contradictions += 1
            continue
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if contradictions:
        data.skipped["pairs labelled alike in both orders"] = contradictions // 2
    return out


def _claim_pairs(data: Labelled, names: list[str]) -> list[dict]:
    group = data.task.group
    if not group:
        raise DataError(
            f"task {data.task.name}: pairs need claims grouped by question, and it has no group"
        )
    groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for r, y in enumerate(data.labels):
        prompt, (claim,) = _split(data, r, names)
        key = (str(data.rows[r].get(group)), prompt)
        groups.setdefault(key, ([], []))[int(y)].append(claim)
    out, one_sided = [], 0
    for (_, prompt), (false, true) in groups.items():
        one_sided += not (false and true)
        out += [{"prompt": prompt, "chosen": t, "rejected": f} for t in true for f in false]
    if one_sided:
        data.skipped["groups with only one label"] = one_sided
    return out


def pair_confidence(data: Labelled) -> dict[tuple[str, str, str], float]:
    """ICM's confidence in each (prompt, chosen, rejected) pair of the rm format: the mean
    `icm_confidence` of the rows that state it (both orders of a comparison; the two claims of
    a claim pair). Pairs whose rows carry no confidence are absent."""
    names = response_fields(data.task)
    stated: dict[tuple[str, ...], list[float]] = {}
    for r, (y, c) in enumerate(zip(data.labels, data.confidence, strict=True)):
        if c is None:
            continue
        prompt, texts = _split(data, r, names)
        key: tuple[str, ...]
        if len(texts) == 2:
            key = (prompt, texts[0], texts[1]) if y else (prompt, texts[1], texts[0])
        else:
            key = (prompt, texts[0])
        stated.setdefault(key, []).append(c)
    mean = {k: sum(v) / len(v) for k, v in stated.items()}
    if len(names) == 2:
        return mean  # type: ignore[return-value]
    out = {}
    for p in _pairs(data):
        a, b = mean.get((p["prompt"], p["chosen"])), mean.get((p["prompt"], p["rejected"]))
        if a is not None and b is not None:
            out[(p["prompt"], p["chosen"], p["rejected"])] = (a + b) / 2
    return out
