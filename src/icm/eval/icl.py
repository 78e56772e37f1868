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
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import files
from ..backends import make_model
from ..config import RunConfig
from ..core.consistency import Constraint, constraints, repair
from ..core.model import LabelModel, metered, token_counts
from ..errors import ContextLengthError, IcmError, RunError
from ..options import SEED_MAX, check, option
from ..runfolder import LABELS, SUMMARY, RunFolder, check_output, input_files
from ..tasks import Dataset, Task, resolve_task
from ..tasks.base import parse_label

METHODS = ("zero-shot", "random", "bootstrap", "gold", "icm")
"""In the order of the paper's figure, with bootstrapped few-shot beside it."""
TITLES = {
    "zero-shot": "zero-shot",
    "random": "random labels",
    "bootstrap": "bootstrapped few-shot",
    "gold": "gold labels",
    "icm": "ICM",
}
EVAL_JSON, EVAL_MD, EVAL_PNG = "eval.json", "eval.md", "eval.png"


@dataclass
class EvalConfig:
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


# -- statistics -----------------------------------------------------------------------------------
class Resamples:
    """Bootstrap resamples of whole groups, shared by every method so that differences between
    methods (PGR) are measured on the same resamples.

    Claims about one question succeed or fail together more often than independent ones would,
    so resampling claims alone would make the interval too narrow."""

    def __init__(self, groups: Sequence[Hashable], resamples: int = 2000, seed: int = 0) -> None:
        ids: dict[Hashable, int] = {}
        self.g = np.array([ids.setdefault(x, len(ids)) for x in groups], dtype=int)
        self.sizes = np.bincount(self.g, minlength=len(ids)).astype(float)
        rng = np.random.default_rng(seed)
        self.pick = rng.integers(len(ids), size=(resamples, len(ids)))

    def accuracy(self, correct: Sequence[bool] | np.ndarray) -> np.ndarray:
        """The accuracy on every resample."""
        hits = np.bincount(self.g, weights=np.asarray(correct, float), minlength=len(self.sizes))
        return hits[self.pick].sum(1) / self.sizes[self.pick].sum(1)


def interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The percentile interval of resampled values (None where none is defined)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2
    return [float(x) for x in np.quantile(values, [tail, 1 - tail])]


def bootstrap_interval(
    correct: Sequence[bool] | np.ndarray,
    groups: Sequence[Hashable],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the accuracy, resampling whole groups with replacement."""
    if len(correct) == 0:
        raise ValueError("no claims to resample")
    lo, hi = interval(Resamples(groups, resamples, seed).accuracy(correct), level)  # type: ignore
    return lo, hi


def pgr(method: float, zero: float, gold: float) -> float | None:
    """Performance gap recovered: the share of the zero-shot-to-gold gap a method closes; None
    where gold labels do no better than zero-shot (there is no gap to recover)."""
    return None if gold <= zero else (method - zero) / (gold - zero) + 0.0  # no -0.0


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
def read_run_labels(folder: Path, task: Task) -> tuple[Dataset, list[int]]:
    """The run's claims (as the task builds them, with gold) and the ICM label of each."""
    path = folder / LABELS
    if not path.exists():
        raise RunError(f"{folder}: no {LABELS} yet: finish the run (icm run --resume)")
    rows = files.read_jsonl(path)
    data = task.build(rows, str(path))
    icm = []
    for r, row in enumerate(rows, start=1):
        y = parse_label(row.get("icm_label"), str(path), r, "icm_label")
        if y is None:
            raise RunError(f"{path}: row {r}: missing field 'icm_label'")
        icm.append(y)
    return data, icm


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


def _test_set(run_cfg: RunConfig, cfg: EvalConfig, task: Task) -> tuple[Dataset, dict]:
    if cfg.test and cfg.split_test is not None:
        raise IcmError("pass either --test FILE or --split-test FRACTION, not both")
    if cfg.test:
        test, info = task.load(cfg.test), {"test": cfg.test}
    elif cfg.split_test is not None:
        source = cfg.data or run_cfg.data
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


def evaluate(
    run: str | Path,
    cfg: EvalConfig,
    model: LabelModel | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    note: Callable[[str], None] = lambda text: None,
) -> dict:
    """Accuracy of the argmax label against gold on the test claims, for each method.

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
    keep = [i for i, g in enumerate(test.gold) if g is not None]
    if not keep:
        raise IcmError(f"{info['test']}: no test claim has a gold label to score against")
    no_gold = len(test) - len(keep)
    test = test.subset(keep)
    # A demonstration must not reveal a test claim: same groups when both come from one file,
    # otherwise the same claim text.
    if _same_file(info["test"], run_cfg.data):
        held = {ex.group for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.group in held}
    else:
        asked = {ex.prompt for ex in test.examples}
        overlap = {i for i, ex in enumerate(train.examples) if ex.prompt in asked}
    pool = [i for i in range(len(train)) if i not in overlap]
    has_gold = any(train.gold[i] is not None for i in pool)
    if has_gold:  # the same demonstrations for every method: those with a gold label
        pool = [i for i in pool if train.gold[i] is not None]

    scorer = cfg.model or run_cfg.model
    if model is None:
        rcfg = dataclasses.replace(
            run_cfg,
            model=scorer,
            threads=cfg.threads or run_cfg.threads,
            trust_remote_code=cfg.trust_remote_code,
        )
        model = make_model(rcfg, task.fmt)
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
        "bootstrap": None,
        "gold": [int(bool(train.gold[i])) for i in demos] if has_gold else None,
        "icm": [icm[i] for i in demos],
    }
    label_cost: dict[str, dict | None] = {m: {"model_calls": 0, "tokens": 0} for m in METHODS}
    label_cost["icm"] = _run_cost(folder.path)
    if cfg.fewshot_rounds:
        note(f"bootstrapped few-shot: labelling the {len(demos)} demonstrations")
        cons = constraints(task.rule, [train.examples[i] for i in demos])
        with metered() as used:
            labellings["bootstrap"] = bootstrap_labels(model, prompts, cons, cfg.fewshot_rounds)
        label_cost["bootstrap"] = {"model_calls": used.calls, "tokens": used.tokens}
    gold = np.array(test.gold, dtype=int)
    groups = [
        ex.group if ex.group is not None else ("row", i) for i, ex in enumerate(test.examples)
    ]
    resamples = Resamples(groups, cfg.bootstrap, cfg.seed)
    calls0, tokens0, t0 = model.calls, model.tokens, time.perf_counter()
    methods: dict[str, dict] = {}
    logodds: dict[str, list[float]] = {}
    resampled: dict[str, np.ndarray] = {}
    todo = [m for m in METHODS if labellings[m] is not None]
    for k, name in enumerate(todo, start=1):
        labels = labellings[name]
        assert labels is not None
        shown = prompts if labels else []
        note(
            f"scoring {len(queries)} test claims after {len(shown)} demonstrations labelled by "
            f"{TITLES[name]} ({k}/{len(todo)})"
        )
        try:
            with metered() as used:
                lp = model.query_logprobs(shown, labels, queries)
        except ContextLengthError as e:
            raise IcmError(f"{e} (eval: lower --context-tokens or --max-demos)") from e
        lo = lp[:, 1] - lp[:, 0]
        correct = (lo > 0).astype(int) == gold
        resampled[name] = resamples.accuracy(correct)
        methods[name] = {
            "title": TITLES[name],
            "accuracy": float(correct.mean()),
            "ci95": interval(resampled[name]),
            "correct": int(correct.sum()),
            "n": len(correct),
            "predicted_true": int((lo > 0).sum()),
            "auc": auc(lo, gold),
            "demos": len(labels),
            "demo_true": int(sum(labels)),
            "demo_agreement": _agree(labels, [train.gold[i] for i in demos]) if labels else None,
            "label_cost": label_cost[name],
            "eval_cost": {"model_calls": used.calls, "tokens": used.tokens},
        }
        logodds[name] = [round(float(x), 4) for x in lo]
    if "gold" in methods:
        zero, top = methods["zero-shot"]["accuracy"], methods["gold"]["accuracy"]
        gap = resampled["gold"] - resampled["zero-shot"]
        for name, m in methods.items():
            m["pgr"] = pgr(m["accuracy"], zero, top)
            with np.errstate(divide="ignore", invalid="ignore"):
                per = (resampled[name] - resampled["zero-shot"]) / gap
            m["pgr_ci95"] = (
                interval(np.where(gap > 0, per, np.nan)) if m["pgr"] is not None else None
            )
    return {
        "kind": "icm eval",
        "run": str(folder.path),
        "task": task.name,
        "model": scorer,
        "run_model": run_cfg.model,
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


def bootstrap_labels(
    model: LabelModel, prompts: Sequence[str], cons: Sequence[Constraint], rounds: int
) -> list[int]:
    """Bootstrapped few-shot labels: the zero-shot argmax, then, round after round, each example's
    argmax with every other example's current label as a demonstration (leave-one-out), made
    consistent with the rule; until nothing changes or `rounds` are done."""
    lp = model.query_logprobs([], [], prompts)
    margin = lp[:, 1] - lp[:, 0]
    labels = repair([int(x > 0) for x in margin], margin, cons, [False] * len(prompts))
    for _ in range(rounds):
        lp = model.loo_logprobs(prompts, labels)
        margin = lp[:, 1] - lp[:, 0]
        new = repair([int(x > 0) for x in margin], margin, cons, [False] * len(prompts))
        if new == labels:
            break
        labels = new
    return labels


def _run_cost(folder: Path) -> dict | None:
    """What the ICM search cost (from the run's summary.json)."""
    try:
        summary = files.read_json(folder / SUMMARY)
    except IcmError:
        return None
    if not isinstance(summary, dict):
        return None
    return {"model_calls": summary.get("model_calls"), "tokens": summary.get("tokens")}


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
        "| method | accuracy (%) | 95% CI | PGR (95% CI) | correct / n | demos (True) | AUC "
        "| labelling cost | evaluation cost |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in result["methods"].values():
        lo, hi = m["ci95"]
        auc_s = "-" if m["auc"] is None else f"{m['auc']:.2f}"
        lines.append(
            f"| {m['title']} | {_pct(m['accuracy'])} | {_pct(lo)}-{_pct(hi)} | "
            f"{pgr_text(m)} | {m['correct']} / {m['n']} | {m['demos']} ({m['demo_true']}) | "
            f"{auc_s} | {cost_text(m.get('label_cost'))} | {cost_text(m.get('eval_cost'))} |"
        )
    if d.get("dropped_overlap"):
        lines += ["", overlap_text(result)]
    lines += [
        "",
        "PGR: (method - zero-shot) / (gold - zero-shot), the share of the gap to gold labels a "
        "method recovers. Cost: model calls / prompt tokens.",
    ]
    return "\n".join(lines) + "\n"


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
