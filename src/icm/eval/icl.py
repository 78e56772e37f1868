"""Many-shot in-context evaluation, the paper's protocol, with a cheap unsupervised baseline.

Held-out claims are scored after the same demonstrations labelled five ways: by the ICM run, with
gold labels, with random (balanced) labels, by bootstrapped few-shot prompting (zero-shot labels,
then each demonstration relabelled from the others, made consistent, for a few rounds), and with
no demonstrations at all (zero-shot). Only the labels differ, so the gap between ICM and gold is
the cost of not having gold labels, and the gap between ICM and bootstrapped few-shot is what
ICM's search buys. Accuracy comes with a 95% bootstrap interval over question groups (claims of
one question are not independent), and so does the performance gap recovered,
PGR = (method - zero-shot) / (gold - zero-shot), computed on the same resamples.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import files
from ..backends import make_model
from ..core.baselines import bootstrapped_fewshot, zero_shot_consistent
from ..core.consistency import Structure, constraints, get_rule
from ..core.model import LabelModel, metered, token_costs
from ..errors import ContextLengthError, IcmError
from ..options import SEED_MAX, check, option, options_of
from ..run.checks import concept_text, diagnosis_text, fresh_text
from ..run.config import RunConfig
from ..run.folder import LABELS, SUMMARY, RunFolder, check_output, input_files
from ..run.labels import read_labels
from ..run.readback import CONCEPT, diagnosis_problem, problem, read_checked, read_summary
from ..tasks import Dataset, Task, resolve_task
from ..tasks.readers import ReadOptions
from .stats import Resamples, auc, interval, pgr, split_groups

METHODS = ("zero-shot", "zs-consistency", "random", "bootstrap", "gold", "icm")
"""In the order of the paper's figure, with the cheap unsupervised baselines beside it."""
TITLES = {
    "zero-shot": "zero-shot",
    "zs-consistency": "zero-shot + consistency",
    "random": "random labels",
    "bootstrap": "bootstrapped few-shot",
    "gold": "gold labels",
    "icm": "ICM",
}
EVAL_JSON, EVAL_MD, EVAL_PNG = "eval.json", "eval.md", "eval.png"
_SCORE = {
    "accuracy": "number",
    "ci95": "pair",
    "correct": "count",
    "n": "count",
    "pgr?": ("number", None),
    "pgr_ci95?": ("pair", None),
}
_COST = (
    {"model_calls?": ("count", None), "tokens?": ("count", None), "rounds_text?": "text"},
    None,
)
RESULT = {
    "task": "text",
    "model": "text",
    "test": "text",
    "test_claims": "count",
    "test_groups": "count",
    "test_true": "count",
    "demos": {"count": "count", "tokens": "count", "dropped_overlap?": ("count", None)},
    "icm_agreement": {"demos": ("number", None), "run": ("number", None)},
    "methods": {
        "_": {
            **_SCORE,
            "title": "text",
            "auc": ("number", None),
            "demos": "count",
            "demo_true": "count",
            "label_cost?": _COST,
            "eval_cost?": _COST,
            "joint?": _SCORE,
        }
    },
    "search?": (
        {
            "utility?": ("number", None),
            "gold_utility?": ("number", None),
            "diagnosis?": ({"_": "count"}, None),
            "fresh_order?": ({"utility": "number", "gold_utility": "number"}, None),
            "concept?": (CONCEPT, None),
            "batches?": ("count", None),
        },
        None,
    ),
}
"""What the readers of eval.json (`icm report`) use, checked on read."""


@dataclass
class EvalConfig(ReadOptions):
    test: str = option("", "held-out claims to score, read with the run's task")
    data: str = option("", "with --split-test: the file to split; empty: the run's data file")
    split_test: float | None = option(
        None, "hold out this fraction of the groups of --data as the test set", above=0, max=0.99
    )
    split_seed: int = option(0, "seed of the --split-test group split", min=0, max=SEED_MAX)
    task: str = option("", "task of the test claims; empty: the run's")
    limit: int | None = option(
        None, "score only the first whole test groups, up to this many", min=1
    )
    max_demos: int | None = option(
        None, "at most this many demonstrations; None: all that fit", min=0
    )
    context_tokens: int | None = option(
        None, "prompt-token budget; None: the model's context", min=16
    )
    seed: int = option(
        0, "seed of the demonstration order, random labels, bootstrap", min=0, max=SEED_MAX
    )
    bootstrap: int = option(
        2000, "bootstrap resamples of the 95 percent interval", min=1, max=10**6
    )
    fewshot_rounds: int = option(
        3, "rounds of the bootstrapped few-shot baseline (0: leave it out)", min=0, max=100
    )
    model: str = option(
        "", "model to score with, e.g. the folder `icm finetune` wrote; empty: the run's"
    )
    threads: int | None = option(
        None, "CPU threads for torch; None: the run's setting", min=1, max=1024
    )
    trust_remote_code: bool = option(
        False, "run Python code shipped with the model (only for models you trust)"
    )


# -- the evaluation -------------------------------------------------------------------------------
def read_run_labels(folder: Path, task: Task) -> tuple[Dataset, list[int]]:
    """The run's claims (as the task builds them, with gold) and the ICM label of each."""
    rows = read_labels(RunFolder(folder))
    data = task.build(rows, str(folder / LABELS))
    return data, [int(row["icm_label"]) for row in rows]


def check_out(out: Path, overwrite: bool, run: Path, run_cfg: RunConfig) -> None:
    """eval.json, eval.md and eval.png go into a folder: never over a file of the run or an
    input; over eval files of another origin only with `overwrite`."""
    if out.exists() and not out.is_dir():
        raise IcmError(f"{out}: is a file; --out names a folder for eval.json, eval.md, eval.png")
    ours = out.resolve() == run.resolve() or _is_eval(out / EVAL_JSON)
    for name in (EVAL_JSON, EVAL_MD, EVAL_PNG):
        check_output(out / name, overwrite, ours, input_files(run_cfg), run)


def _is_eval(path: Path) -> bool:
    try:
        d = files.read_json(path)
    except IcmError:
        return False
    return isinstance(d, dict) and d.get("kind") == "icm eval"


def choose_demos(
    prompts: Sequence[str],
    model: LabelModel,
    task: Task,
    budget: int | None,
    max_demos: int | None,
    longest_query: int,
    seed: int,
) -> tuple[list[int], int]:
    """Indices of the demonstrations, in prompt order, and their token count: a seeded shuffle
    cut where the next one would not fit `budget` (room is kept for the longest query)."""

    def count(texts: Sequence[str]) -> list[int]:
        return token_costs(model, texts)

    order = np.random.default_rng(seed).permutation(len(prompts))
    # Room for the longest query, the format's prefix and a BOS token.
    room = budget - longest_query - count([task.fmt.prefix])[0] - 1 if budget else None
    longest_word = max(task.fmt.label_words, key=len)
    costs = count([p + longest_word + task.fmt.separator for p in prompts])
    chosen: list[int] = []
    used = 0
    for i in order:
        if max_demos is not None and len(chosen) >= max_demos:
            break
        cost = costs[i]
        if room is not None and used + cost > room:
            break
        chosen.append(int(i))
        used += cost
    return chosen, used


def _test_set(run_cfg: RunConfig, cfg: EvalConfig, task: Task) -> tuple[Dataset, dict]:
    if cfg.test and cfg.split_test is not None:
        raise IcmError("pass either --test FILE or --split-test FRACTION, not both")
    info: dict[str, Any]
    if cfg.test:
        test, info = task.load(cfg.test, options_of(ReadOptions, cfg)), {"test": cfg.test}
    elif cfg.split_test is not None:
        source = cfg.data or run_cfg.data
        if not source:
            raise IcmError("--split-test needs --data FILE (the run names no data file)")
        data = task.load(source, options_of(ReadOptions, cfg))
        _, idx = split_groups(data, cfg.split_test, cfg.split_seed)
        test = data.subset(idx)
        info = {"test": source, "split_test": cfg.split_test, "split_seed": cfg.split_seed}
    else:
        raise IcmError("pass --test FILE, or --split-test FRACTION to hold out part of --data")
    if cfg.limit is not None:
        test = test.first_groups(cfg.limit)
    return test, info


def _same_file(a: str, b: str) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


@dataclass
class Setup:
    """What every method shares: the claims, the demonstrations and how they are scored."""

    task: Task
    train: Dataset
    icm: list[int]
    test: Dataset
    info: dict
    demos: list[int]
    demo_tokens: int
    pool: int
    overlap: int
    budget: int | None
    no_gold: int


def evaluate(
    run: str | Path,
    cfg: EvalConfig,
    model: LabelModel | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    note: Callable[[str], None] = lambda text: None,
) -> dict:
    """Accuracy of the argmax label against gold on the test claims, for each method: claim by
    claim (the paper's protocol) and, for a task with a rule, each test group decided jointly.

    `out`: where the caller will write the result; checked here, before the long work.
    `note(text)` hears what it is doing, step by step."""
    check(cfg)
    folder = RunFolder(run)
    run_cfg = folder.read_config()
    if out is not None:
        check_out(Path(out), overwrite, folder.path, run_cfg)
    task = resolve_task(cfg.task or run_cfg.task)
    train, icm = read_run_labels(folder.path, task)
    test, info = _test_set(run_cfg, cfg, task)
    model = model or _scorer(run_cfg, cfg, task)
    setup = _setup(task, train, icm, test, info, run_cfg, cfg, model)
    labellings, label_cost = _labellings(setup, model, cfg, folder.path, note)
    t0 = time.perf_counter()
    with metered() as usage:
        methods, logodds = _score_all(setup, model, labellings, label_cost, cfg, note)
    return {
        **_header(setup, folder.path, run_cfg, cfg),
        "search": _search_figures(folder.path),
        "methods": methods,
        "seed": cfg.seed,
        "bootstrap": cfg.bootstrap,
        "model_calls": usage.calls,
        "tokens": usage.tokens,
        "seconds": round(time.perf_counter() - t0, 3),
        "predictions": [
            # the test claims all have gold (`_setup` keeps only those)
            {"uid": ex.uid, "gold": int(cast(int, g)), **{m: logodds[m][k] for m in logodds}}
            for k, (ex, g) in enumerate(zip(setup.test.examples, setup.test.gold, strict=True))
        ],
    }


def _scorer(run_cfg: RunConfig, cfg: EvalConfig, task: Task) -> LabelModel:
    rcfg = dataclasses.replace(
        run_cfg,
        model=cfg.model or run_cfg.model,
        threads=cfg.threads or run_cfg.threads,
        trust_remote_code=cfg.trust_remote_code,
    )
    return make_model(rcfg, task.fmt)


def _setup(
    task: Task,
    train: Dataset,
    icm: list[int],
    test: Dataset,
    info: dict,
    run_cfg: RunConfig,
    cfg: EvalConfig,
    model: LabelModel,
) -> Setup:
    """The test claims with gold, and the demonstrations: the run's claims that reveal no test
    claim (same groups when both come from one file, else the same text), with gold where the
    data has it (so that every method shows the same ones), as many as fit."""
    keep = [i for i, g in enumerate(test.gold) if g is not None]
    if not keep:
        raise IcmError(f"{info['test']}: no test claim has a gold label to score against")
    no_gold, test = len(test) - len(keep), test.subset(keep)
    if _same_file(info["test"], run_cfg.data):
        held = {ex.group for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.group in held}
    else:
        asked = {ex.prompt for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.prompt in asked}
    pool = [i for i in range(len(train)) if i not in overlap]
    if not pool:
        raise IcmError(
            f"{info['test']}: each of the run's {len(train)} claims is a test claim or shares "
            "its question with one, so none can be a demonstration: test on other claims"
        )
    if any(train.gold[i] is not None for i in pool):
        pool = [i for i in pool if train.gold[i] is not None]
    budget = cfg.context_tokens or model.max_context
    longest = max(token_costs(model, [ex.prompt for ex in test.examples]))
    prompts = [train.examples[i].prompt for i in pool]
    picked, used = choose_demos(prompts, model, task, budget, cfg.max_demos, longest, cfg.seed)
    if not picked:
        raise IcmError(
            f"no demonstration fits: {len(pool)} available, token budget {budget}; "
            "raise --context-tokens or --max-demos"
        )
    demos = [pool[k] for k in picked]
    return Setup(
        task, train, icm, test, info, demos, used, len(pool), len(overlap), budget, no_gold
    )


def _labellings(
    setup: Setup, model: LabelModel, cfg: EvalConfig, run: Path, note: Callable[[str], None]
) -> tuple[dict[str, list[int] | None], dict[str, dict | None]]:
    """The demonstrations' labels by each method, and what labelling them cost."""
    train, demos = setup.train, setup.demos
    prompts = [train.examples[i].prompt for i in demos]
    rng = np.random.default_rng(cfg.seed + 1)
    random_labels = [k % 2 for k in range(len(demos))]
    rng.shuffle(random_labels)
    has_gold = train.gold[demos[0]] is not None
    labellings: dict[str, list[int] | None] = {
        "zero-shot": [],
        "zs-consistency": None,
        "random": [int(y) for y in random_labels],
        "bootstrap": None,
        "gold": [int(bool(train.gold[i])) for i in demos] if has_gold else None,
        "icm": [setup.icm[i] for i in demos],
    }
    cost: dict[str, dict | None] = {m: {"model_calls": 0, "tokens": 0} for m in METHODS}
    cost["icm"] = _run_cost(run)
    cons = constraints(setup.task.rule, [train.examples[i] for i in demos])
    structure = Structure(cons, len(demos))
    note(f"zero-shot + consistency: labelling the {len(demos)} demonstrations")
    with metered() as used:
        labellings["zs-consistency"] = zero_shot_consistent(model, prompts, structure)
    cost["zs-consistency"] = {"model_calls": used.calls, "tokens": used.tokens}
    if cfg.fewshot_rounds:
        note(f"bootstrapped few-shot: labelling the {len(demos)} demonstrations")
        with metered() as used:
            boot = bootstrapped_fewshot(model, prompts, structure, cfg.fewshot_rounds)
        labellings["bootstrap"] = boot.labels
        cost["bootstrap"] = {
            "model_calls": used.calls,
            "tokens": used.tokens,
            "outcome": boot.outcome,
            "rounds_text": boot.text(),
        }
    return labellings, cost


def _score_all(
    setup: Setup,
    model: LabelModel,
    labellings: dict[str, list[int] | None],
    label_cost: dict[str, dict | None],
    cfg: EvalConfig,
    note: Callable[[str], None],
) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Every method's accuracy on the test claims (both protocols), with PGR."""
    test = setup.test
    gold = np.array(test.gold, dtype=int)
    groups = [ex.group_or(i) for i, ex in enumerate(test.examples)]
    resamples = Resamples(groups, cfg.bootstrap, cfg.seed)
    joint = None
    if get_rule(setup.task.rule).constrains:
        joint = Structure(constraints(setup.task.rule, test.examples), len(test))
    methods: dict[str, dict] = {}
    logodds: dict[str, list[float]] = {}
    todo = [m for m in METHODS if labellings[m] is not None]
    for k, name in enumerate(todo, start=1):
        labels = labellings[name]
        assert labels is not None
        note(
            f"scoring {len(test)} test claims after {len(labels)} demonstrations labelled by "
            f"{TITLES[name]} ({k}/{len(todo)})"
        )
        lo, used = _test_logodds(setup, model, labels)
        methods[name] = {
            "title": TITLES[name],
            **_accuracy((lo > 0).astype(int) == gold, resamples),
            "predicted_true": int((lo > 0).sum()),
            "auc": auc(lo, gold),
            "demos": len(labels),
            "demo_true": int(sum(labels)),
            "demo_agreement": _agree(labels, [setup.train.gold[i] for i in setup.demos])
            if labels
            else None,
            "label_cost": label_cost[name],
            "eval_cost": used,
        }
        if joint is not None:
            methods[name]["joint"] = _accuracy(np.array(joint.decode(lo)) == gold, resamples)
        logodds[name] = [round(float(x), 4) for x in lo]
    _add_pgr(methods, lambda m: m)
    if joint is not None:
        _add_pgr(methods, lambda m: m["joint"])
    return methods, logodds


def _test_logodds(setup: Setup, model: LabelModel, labels: list[int]) -> tuple[np.ndarray, dict]:
    """Each test claim's log-odds after the demonstrations labelled `labels` (none: [])."""
    shown = [setup.train.examples[i].prompt for i in setup.demos] if labels else []
    try:
        with metered() as used:
            lp = model.query_logprobs(shown, labels, [ex.prompt for ex in setup.test.examples])
    except ContextLengthError as e:
        raise IcmError(f"{e} (eval: lower --context-tokens or --max-demos)") from e
    return lp[:, 1] - lp[:, 0], {"model_calls": used.calls, "tokens": used.tokens}


def _accuracy(correct: np.ndarray, resamples: Resamples) -> dict:
    r = resamples.accuracy(correct)
    return {
        "accuracy": float(correct.mean()),
        "ci95": interval(r),
        "correct": int(correct.sum()),
        "n": len(correct),
        "resampled": r,
    }


def _add_pgr(methods: dict[str, dict], part: Callable[[dict], dict]) -> None:
    """Each method's PGR and its interval on the same resamples (where gold is there); then
    the resamples are dropped."""
    if "gold" in methods:
        zero, top = part(methods["zero-shot"]), part(methods["gold"])
        gap = top["resampled"] - zero["resampled"]
        for m in methods.values():
            p = part(m)
            p["pgr"] = pgr(p["accuracy"], zero["accuracy"], top["accuracy"])
            with np.errstate(divide="ignore", invalid="ignore"):
                per = (p["resampled"] - zero["resampled"]) / gap
            ci = interval(np.where(gap > 0, per, np.nan)) if p["pgr"] is not None else None
            p["pgr_ci95"] = ci
    for m in methods.values():
        part(m).pop("resampled")


def _header(setup: Setup, run: Path, run_cfg: RunConfig, cfg: EvalConfig) -> dict:
    train, test, demos = setup.train, setup.test, setup.demos
    groups = {ex.group_or(i) for i, ex in enumerate(test.examples)}
    return {
        "kind": "icm eval",
        "run": str(run),
        "task": setup.task.name,
        "rule": setup.task.rule,
        "model": cfg.model or run_cfg.model,
        "run_model": run_cfg.model,
        **setup.info,
        "limit": cfg.limit,
        "test_claims": len(test),
        "test_groups": len(groups),
        "test_true": int(sum(int(cast(int, g)) for g in test.gold)),  # all have gold
        "test_without_gold": setup.no_gold,
        "demos": {
            "count": len(demos),
            "tokens": setup.demo_tokens,
            "available": setup.pool,
            "dropped_overlap": setup.overlap,
            "context_tokens": setup.budget,
            "max_demos": cfg.max_demos,
            "uids": [train.examples[i].uid for i in demos],
        },
        "icm_agreement": {
            "demos": _agree([setup.icm[i] for i in demos], [train.gold[i] for i in demos]),
            "run": _agree(setup.icm, train.gold),
        },
    }


def _search_figures(run: Path) -> dict | None:
    """What the run's summary says of its search against gold: U found, U of the gold
    labelling, which failed (the search or the objective), and the concept test."""
    summary = read_summary(run / SUMMARY)
    if summary is None:
        return None
    keys = ("utility", "gold_utility", "diagnosis", "fresh_order", "concept", "batches")
    return {k: summary.get(k) for k in keys}


def _run_cost(folder: Path) -> dict | None:
    """What the ICM search cost (from the run's summary.json)."""
    summary = read_summary(folder / SUMMARY)
    if summary is None:
        return None
    return {"model_calls": summary["model_calls"], "tokens": summary["tokens"]}


def _agree(labels: Sequence[int], gold: Sequence[int | None]) -> float | None:
    pairs = [(y, g) for y, g in zip(labels, gold, strict=True) if g is not None]
    return sum(y == g for y, g in pairs) / len(pairs) if pairs else None


# -- output ---------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def markdown(result: dict) -> str:
    """The result as a Markdown table with one line of context above it (and one below on
    the search itself, where the run's data has gold labels)."""
    d = result["demos"]
    agree = result["icm_agreement"]
    joint = any("joint" in m for m in result["methods"].values())
    lines = [
        f"Many-shot ICL on {result['test_claims']} held-out {result['task']} claims "
        f"({result['test_groups']} groups, {result['test_true']} True) from {result['test']}; "
        f"model {result['model']}; {d['count']} demonstrations ({d['tokens']} tokens). "
        f"ICM labels agree with gold on {_pct(agree['demos'])}% of the demonstrations "
        f"({_pct(agree['run'])}% of the run).",
        "",
        "| method | accuracy (%) | 95% CI | PGR (95% CI) | "
        + ("joint accuracy (%) | joint PGR | " if joint else "")
        + "correct / n | demos (True) | AUC | labelling cost | evaluation cost |",
        "| --- | ---: | --- | --- | "
        + ("---: | --- | " if joint else "")
        + "---: | ---: | ---: | ---: | ---: |",
    ]
    for m in result["methods"].values():
        lo, hi = m["ci95"]
        auc_s = "-" if m["auc"] is None else f"{m['auc']:.2f}"
        both = f"{_pct(m['joint']['accuracy'])} | {pgr_text(m['joint'])} | " if joint else ""
        lines.append(
            f"| {m['title']} | {_pct(m['accuracy'])} | {_pct(lo)}-{_pct(hi)} | "
            f"{pgr_text(m)} | {both}{m['correct']} / {m['n']} | {m['demos']} "
            f"({m['demo_true']}) | {auc_s} | {cost_text(m.get('label_cost'))} | "
            f"{cost_text(m.get('eval_cost'))} |"
        )
    if d.get("dropped_overlap"):
        lines += ["", overlap_text(result)]
    boot = result["methods"].get("bootstrap", {}).get("label_cost") or {}
    if boot.get("rounds_text"):
        lines += ["", f"Bootstrapped few-shot {boot['rounds_text']}."]
    lines += [
        "",
        "PGR: (method - zero-shot) / (gold - zero-shot), the share of the gap to gold labels a "
        "method recovers. Cost: model calls / prompt tokens."
        + (
            " Joint: each test group decided together under the task's consistency rule "
            "(the claim-by-claim columns threshold every claim alone, the paper's protocol)."
            if joint
            else ""
        ),
    ]
    if (line := search_text(result.get("search"))) is not None:
        lines += ["", line]
    return "\n".join(lines) + "\n"


def search_text(search: dict | None) -> str | None:
    """One line on the run's search: U found against U of the gold labelling, and the concept
    test (None when the run's summary says neither)."""
    if not search:
        return None
    parts = []
    if search.get("gold_utility") is not None:
        parts.append(
            f"U of the labelling found {search['utility']:.3f}, of the gold labelling "
            f"{search['gold_utility']:.3f}: "
            + diagnosis_text(search.get("diagnosis"), search.get("batches") or 1)
        )
    if fresh := fresh_text(search.get("fresh_order"), search.get("batches") or 1):
        parts.append(fresh)
    concept = search.get("concept")
    if concept:
        parts.append("concept test: " + concept_text(concept))
    return "Search: " + "; ".join(parts) + "." if parts else None


def pgr_text(m: dict) -> str:
    if m.get("pgr") is None:
        return "-"
    ci = m.get("pgr_ci95")
    return f"{m['pgr']:.2f}" + (f" ({ci[0]:.2f} to {ci[1]:.2f})" if ci else "")


def cost_text(cost: dict | None) -> str:
    if not cost or cost.get("model_calls") is None:
        return "-"
    return f"{cost['model_calls']} / {cost['tokens']}"


def overlap_text(result: dict) -> str:
    """Why fewer demonstrations than the run labelled (said on the terminal and in eval.md)."""
    d = result["demos"]
    return (
        f"{d['dropped_overlap']} of the run's labelled claims were left out as demonstrations: "
        "they share a question with a test claim (or are one)."
    )


def result_problem(result: object) -> str | None:
    """What is wrong with an eval.json's fields (None: nothing)."""
    why = problem(result, RESULT, "eval")
    search = (cast(dict, result).get("search") or {}) if why is None else {}
    why = why or diagnosis_problem(search.get("diagnosis"), "search.diagnosis")
    fresh = (search.get("fresh_order") or {}).get("diagnosis")
    return why or diagnosis_problem(fresh, "search.fresh_order.diagnosis")


def read_result(path: Path) -> dict | None:
    """eval.json as `icm eval` wrote it, checked; None when there is none."""
    return read_checked(path, "evaluation", result_problem)


def write(result: dict, out: str | Path) -> list[Path]:
    """eval.json, eval.md and (when matplotlib is installed) eval.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / EVAL_JSON, result)
    files.write_text(out / EVAL_MD, markdown(result))
    written = [out / EVAL_JSON, out / EVAL_MD]
    try:
        from .plots import eval_chart
    except ImportError:
        return written
    files.write_bytes(out / EVAL_PNG, eval_chart(result))
    return [*written, out / EVAL_PNG]
