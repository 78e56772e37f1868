"""Many-shot in-context evaluation, the paper's protocol.

Held-out claims are scored after the same demonstrations labelled four ways: by the ICM run, with
gold labels, with random (balanced) labels, and with no demonstrations at all (zero-shot). Only the
labels differ between the first three, so the gap between ICM and gold is the cost of not having
gold labels. Accuracy comes with a 95% bootstrap interval over question groups, because the claims
of one question are not independent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..core.model import LabelModel, token_counts
from ..errors import ContextLengthError, IcmError, RunError
from ..run import LABELS, Run, make_model, resolve_task
from ..tasks import Dataset, Task
from ..tasks.base import parse_label, read_rows

METHODS = ("zero-shot", "random", "gold", "icm")
"""In the order of the paper's figure."""
TITLES = {"zero-shot": "zero-shot", "random": "random labels", "gold": "gold labels", "icm": "ICM"}
EVAL_JSON, EVAL_MD, EVAL_PNG = "eval.json", "eval.md", "eval.png"


@dataclass
class EvalConfig:
    test: str = field(
        default="", metadata={"help": "held-out claims to score, read with the run's task"}
    )
    data: str = field(
        default="",
        metadata={"help": "with --split-test: the file to split; empty: the run's data file"},
    )
    split_test: float | None = field(
        default=None,
        metadata={"help": "hold out this fraction of the groups of --data as the test set"},
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the --split-test group split"})
    task: str = field(default="", metadata={"help": "task of the test claims; empty: the run's"})
    limit: int | None = field(
        default=None, metadata={"help": "score only the first whole test groups, up to this many"}
    )
    max_demos: int | None = field(
        default=None, metadata={"help": "at most this many demonstrations; None: all that fit"}
    )
    context_tokens: int | None = field(
        default=None, metadata={"help": "prompt-token budget; None: the model's context"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the demonstration order, random labels, bootstrap"}
    )
    bootstrap: int = field(
        default=2000, metadata={"help": "bootstrap resamples of the 95 percent interval"}
    )
    model: str = field(
        default="",
        metadata={
            "help": "model to score with, e.g. the folder `icm finetune` wrote; empty: the run's"
        },
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch; None: the run's setting"}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run Python code shipped with the model (only for models you trust)"},
    )


# -- statistics -----------------------------------------------------------------------------------
def bootstrap_interval(
    correct: Sequence[bool] | np.ndarray,
    groups: Sequence[Hashable],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the accuracy, resampling whole groups with replacement.

    Claims about one question succeed or fail together more often than independent ones would,
    so resampling claims alone would make the interval too narrow.
    """
    c = np.asarray(correct, dtype=float)
    if len(c) == 0:
        return (float("nan"), float("nan"))
    ids: dict[Hashable, int] = {}
    g = np.array([ids.setdefault(x, len(ids)) for x in groups])
    hits, sizes = np.bincount(g, weights=c), np.bincount(g).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(ids), size=(resamples, len(ids)))
    acc = hits[pick].sum(1) / sizes[pick].sum(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(acc, [tail, 1 - tail])
    return float(lo), float(hi)


def auc(scores: Sequence[float] | np.ndarray, gold: Sequence[int] | np.ndarray) -> float | None:
    """Probability that a True claim scores above a False one (ties count half); None if one class
    is missing. Accuracy hides a model that ranks well but sits on the wrong side of zero."""
    s, y = np.asarray(scores, dtype=float), np.asarray(gold, dtype=bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def split_groups(data: Dataset, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices of a (train, test) split by whole groups: the same file and seed give the
    same split. Rows without a group are groups of their own."""
    if not 0 < fraction < 1:
        raise IcmError(f"--split-test must be between 0 and 1, got {fraction}")
    members: dict[Hashable, list[int]] = {}
    for i, ex in enumerate(data.examples):
        members.setdefault(ex.group if ex.group is not None else ("row", i), []).append(i)
    if len(members) < 2:
        raise IcmError(f"{data.source}: cannot split {len(members)} group into train and test")
    keys = list(members)
    n_test = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
    order = np.random.default_rng(seed).permutation(len(keys))
    held = {keys[k] for k in order[:n_test]}
    train = sorted(i for k in keys if k not in held for i in members[k])
    test = sorted(i for k in held for i in members[k])
    return train, test


# -- the evaluation -------------------------------------------------------------------------------
def read_run_labels(run: Run, task: Task) -> tuple[Dataset, list[int]]:
    """The run's claims (as the task builds them, with gold) and the ICM label of each."""
    path = run.folder / LABELS
    if not path.exists():
        raise RunError(f"{run.folder}: no {LABELS} yet: finish the run (icm run --resume)")
    rows = read_rows(path)
    data = task.build(rows, str(path))
    icm = []
    for r, row in enumerate(rows, start=1):
        y = parse_label(row.get("icm_label"), str(path), r, "icm_label")
        if y is None:
            raise RunError(f"{path}: row {r}: missing field 'icm_label'")
        icm.append(y)
    return data, icm


def _token_counter(model: LabelModel) -> Callable[[Sequence[str]], list[int]]:
    """Token counts by the model's tokenizer or, without one, a generous guess."""
    return lambda texts: token_counts(model, texts) or [len(t) // 2 + 1 for t in texts]


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
    count = _token_counter(model)
    order = np.random.default_rng(seed).permutation(len(prompts))
    # Room for the longest query, the format's prefix and a BOS token.
    room = budget - longest_query - count([task.fmt.prefix])[0] - 1 if budget else None
    longest_word = max(task.fmt.label_words, key=len)
    costs = count([p + longest_word + task.fmt.separator for p in prompts])
    chosen, used = [], 0
    for i in order:
        if max_demos is not None and len(chosen) >= max_demos:
            break
        cost = costs[i]
        if room is not None and used + cost > room:
            break
        chosen.append(int(i))
        used += cost
    return chosen, used


def _test_set(run: Run, cfg: EvalConfig, task: Task) -> tuple[Dataset, dict]:
    if cfg.test and cfg.split_test is not None:
        raise IcmError("pass either --test FILE or --split-test FRACTION, not both")
    if cfg.test:
        test, info = task.load(cfg.test), {"test": cfg.test}
    elif cfg.split_test is not None:
        source = cfg.data or run.cfg.data
        if not source:
            raise IcmError("--split-test needs --data FILE (the run names no data file)")
        data = task.load(source)
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


def evaluate(run: Run, cfg: EvalConfig, model: LabelModel | None = None) -> dict:
    """Accuracy of the argmax label against gold on the test claims, for each method."""
    task = resolve_task(cfg.task or run.cfg.task)
    train, icm = read_run_labels(run, task)
    test, info = _test_set(run, cfg, task)
    keep = [i for i, g in enumerate(test.gold) if g is not None]
    if not keep:
        raise IcmError(f"{info['test']}: no test claim has a gold label to score against")
    no_gold = len(test) - len(keep)
    test = test.subset(keep)
    # A demonstration must not reveal a test claim: same groups when both come from one file,
    # otherwise the same claim text.
    if _same_file(info["test"], run.cfg.data):
        held = {ex.group for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.group in held}
    else:
        asked = {ex.prompt for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.prompt in asked}
    pool = [i for i in range(len(train)) if i not in overlap]
    has_gold = any(train.gold[i] is not None for i in pool)
    if has_gold:  # the same demonstrations for every method: those with a gold label
        pool = [i for i in pool if train.gold[i] is not None]

    scorer = cfg.model or run.cfg.model
    if model is None:
        rcfg = dataclasses.replace(
            run.cfg,
            model=scorer,
            threads=cfg.threads or run.cfg.threads,
            trust_remote_code=cfg.trust_remote_code,
        )
        model = make_model(rcfg, task)
    budget = cfg.context_tokens or getattr(model, "max_context", None)
    count = _token_counter(model)
    queries = [ex.prompt for ex in test.examples]
    longest = max(count(queries))
    picked, demo_tokens = choose_demos(
        [train.examples[i].prompt for i in pool],
        model,
        task,
        budget,
        cfg.max_demos,
        longest,
        cfg.seed,
    )
    demos = [pool[k] for k in picked]
    if not demos:
        raise IcmError(
            f"no demonstration fits: {len(pool)} available, token budget {budget}; "
            "raise --context-tokens or --max-demos"
        )
    prompts = [train.examples[i].prompt for i in demos]
    rng = np.random.default_rng(cfg.seed + 1)
    random_labels = [k % 2 for k in range(len(demos))]
    rng.shuffle(random_labels)
    labellings: dict[str, list[int] | None] = {
        "zero-shot": [],
        "random": [int(y) for y in random_labels],
        "gold": [int(bool(train.gold[i])) for i in demos] if has_gold else None,
        "icm": [icm[i] for i in demos],
    }
    gold = np.array(test.gold, dtype=int)
    groups = [
        ex.group if ex.group is not None else ("row", i) for i, ex in enumerate(test.examples)
    ]
    calls0, tokens0, t0 = model.calls, model.tokens, time.perf_counter()
    methods: dict[str, dict] = {}
    logodds: dict[str, list[float]] = {}
    for name in METHODS:
        labels = labellings[name]
        if labels is None:
            continue
        shown = prompts if labels else []
        try:
            lp = model.query_logprobs(shown, labels, queries)
        except ContextLengthError as e:
            raise IcmError(f"{e} (eval: lower --context-tokens or --max-demos)") from e
        lo = lp[:, 1] - lp[:, 0]
        correct = (lo > 0).astype(int) == gold
        ci = bootstrap_interval(correct, groups, cfg.bootstrap, cfg.seed)
        methods[name] = {
            "title": TITLES[name],
            "accuracy": float(correct.mean()),
            "ci95": list(ci),
            "correct": int(correct.sum()),
            "n": len(correct),
            "predicted_true": int((lo > 0).sum()),
            "auc": auc(lo, gold),
            "demos": len(labels),
            "demo_true": int(sum(labels)),
            "demo_agreement": _agree(labels, [train.gold[i] for i in demos]) if labels else None,
        }
        logodds[name] = [round(float(x), 4) for x in lo]
    return {
        "run": str(run.folder),
        "task": task.name,
        "model": scorer,
        "run_model": run.cfg.model,
        **info,
        "limit": cfg.limit,
        "test_claims": len(test),
        "test_groups": len(set(groups)),
        "test_true": int(gold.sum()),
        "test_without_gold": no_gold,
        "demos": {
            "count": len(demos),
            "tokens": demo_tokens,
            "available": len(pool),
            "dropped_overlap": len(overlap),
            "context_tokens": budget,
            "max_demos": cfg.max_demos,
            "uids": [train.examples[i].uid for i in demos],
        },
        "icm_agreement": {
            "demos": _agree([icm[i] for i in demos], [train.gold[i] for i in demos]),
            "run": _agree(icm, train.gold),
        },
        "methods": methods,
        "seed": cfg.seed,
        "bootstrap": cfg.bootstrap,
        "model_calls": model.calls - calls0,
        "tokens": model.tokens - tokens0,
        "seconds": round(time.perf_counter() - t0, 3),
        "predictions": [
            {"uid": ex.uid, "gold": int(g), **{m: logodds[m][k] for m in logodds}}
            for k, (ex, g) in enumerate(zip(test.examples, gold, strict=True))
        ],
    }


def _agree(labels: Sequence[int], gold: Sequence[int | None]) -> float | None:
    pairs = [(y, g) for y, g in zip(labels, gold, strict=True) if g is not None]
    return sum(y == g for y, g in pairs) / len(pairs) if pairs else None


# -- output ---------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def markdown(result: dict) -> str:
    """The result as a Markdown table with one line of context above it."""
    d = result["demos"]
    agree = result["icm_agreement"]
    lines = [
        f"Many-shot ICL on {result['test_claims']} held-out {result['task']} claims "
        f"({result['test_groups']} groups, {result['test_true']} True) from {result['test']}; "
        f"model {result['model']}; {d['count']} demonstrations ({d['tokens']} tokens). "
        f"ICM labels agree with gold on {_pct(agree['demos'])}% of the demonstrations "
        f"({_pct(agree['run'])}% of the run).",
        "",
        "| method | accuracy (%) | 95% CI | correct / n | demos (True) | predicted True | AUC |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for m in result["methods"].values():
        lo, hi = m["ci95"]
        auc_s = "-" if m["auc"] is None else f"{m['auc']:.2f}"
        lines.append(
            f"| {m['title']} | {_pct(m['accuracy'])} | {_pct(lo)}-{_pct(hi)} | "
            f"{m['correct']} / {m['n']} | {m['demos']} ({m['demo_true']}) | "
            f"{m['predicted_true']} | {auc_s} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict, out: str | Path) -> list[Path]:
    """eval.json, eval.md and (when matplotlib is installed) eval.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / EVAL_JSON, result)
    atomic.write_text(out / EVAL_MD, markdown(result))
    written = [out / EVAL_JSON, out / EVAL_MD]
    try:
        from .plots import eval_chart
    except ImportError:
        return written
    atomic.write_bytes(out / EVAL_PNG, eval_chart(result))
    return [*written, out / EVAL_PNG]
