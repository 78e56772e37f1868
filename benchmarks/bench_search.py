"""Search variants against the exact optimum, at equal model-token budgets, beside cheap baselines.

Data sets over `--seeds` seeds (every seed its own claims, made on the spot), `--n` claims:

  demo      the demo concept (`icm demo`): pairs of one content said as a statement (True) and
            asked as a question (False), rule "exactly one of the pair is True". Every one of the
            2^(n/2) consistent labellings is scored, so the true maximum of U is known.
  unpaired  the same concept as single claims with no rule: consistency cannot give the answer
            away, so the labels come from mutual predictability alone.
  control   pairs of two statements of one content, the True one picked by a coin: the label has
            nothing to do with the text, so there is no concept to find.

Variants (each a full search of one batch; tokens are the model's prompt tokens, counted as if
every call were computed, also those this benchmark answers from its memo of identical calls):

  paper           `icm run --algorithm paper`: Algorithm 1 with the paper's objective and constants
                  (sum of log-probs, alpha 50, K = 8 random labels, flip + ConsistencyFix, N
                  iterations, the last state)
  official        `icm run --algorithm official`: the official code's configuration (mean
                  log-odds, alpha 30, 3000 iterations per 256 claims, its temperature schedule)
  paper+repair    the paper's search, its output completed and repaired exactly under the rule
  paper+polish    the same, then the best consistent state visited, completed, repaired, polished
  zs+polish       zero-shot labels decoded under the rule, then polish (no annealing)
  zs+polish/2,/3  the same with U averaged over 2 or 3 demonstration orders
  fewshot+polish  bootstrapped few-shot labels under the rule, then polish
  zs+anneal       zero-shot start, consistent moves, 2N iterations, best state, polish
  ils             zs+polish, then perturb the best (a quarter of its groups flipped) and polish
                  again while the budget lasts (restarts that share their best state)
  restarts        polish from random consistent labellings while the budget lasts, best kept
  tempering       4 replicas at temperatures 0.03-1 with consistent moves, swapping neighbours,
                  while the budget lasts; the best state polished
  default         `icm run` with its defaults, concept test included (run as a user runs it)

U is always the default objective (mean log-odds, alpha 5, one order), whatever a variant
searched with, so the labellings compare on one scale. The budgeted variants get the paper
variant's tokens on the same seed; `--presets-only` runs the three presets and the baselines.
Baselines: zero-shot + consistency, bootstrapped few-shot, random labels, gold. Held-out
accuracy: `--test` claims scored after the train claims labelled each way, each claim alone and
each group decided jointly under the rule. The unpaired and control sets run the presets and
zs+polish only.

    .venv/bin/python benchmarks/bench_search.py           # 4 seeds, demo and control, ~1 hour
    .venv/bin/python benchmarks/bench_search.py --seeds 10 --datasets demo,unpaired,control

Last line (demo concept): search seeds=4 found_ge_gold=k/4 agreement=.. zs_consistency=..
heldout=.. gold=.. tokens_x=.. control_flagged=k/4 concept_flagged=k/4 (flagged: a verdict
other than "holds"; tokens_x: the default's tokens over the paper preset's)
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm import files  # noqa: E402
from icm.core.baselines import bootstrapped_fewshot, zero_shot_consistent  # noqa: E402
from icm.core.consistency import Structure, constraints  # noqa: E402
from icm.core.local import complete, repair, settle  # noqa: E402
from icm.core.model import LabelModel, charge, metered  # noqa: E402
from icm.core.search import Search, SearchConfig, State  # noqa: E402
from icm.demo import ADJECTIVES, NOUNS, PLACES, demo_split  # noqa: E402
from icm.run import Run  # noqa: E402
from icm.run.config import preset  # noqa: E402
from icm.tasks import get_task, register  # noqa: E402

UNPAIRED = register(replace(get_task("demo"), name="demo-unpaired", rule="none", key=None))


class Replay(LabelModel):
    """A model that computes each distinct call once and charges its cost every time it is
    made, so a variant's tokens are what it would have cost on its own (kept on disk between
    runs with `--memo DIR`)."""

    def __init__(self, model, path: Path | None = None) -> None:
        self.model, self.path = model, path
        self.memo: dict[str, tuple[np.ndarray, int, int]] = {}
        if path and path.exists():
            self.memo = pickle.loads(path.read_bytes())
        self.calls = self.tokens = self.cached_tokens = 0
        self.computed = 0
        self.max_context = model.max_context

    def _ask(self, key: tuple, fn: Callable[[], np.ndarray]) -> np.ndarray:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()
        hit = self.memo.get(digest)
        if hit is None:
            with metered() as used:
                out = fn()
            self.memo[digest] = hit = (out, used.calls, used.tokens)
            self.computed += used.tokens
            self.calls += used.calls
            self.tokens += used.tokens
        else:
            charge(self, hit[1], hit[2])
        return hit[0].copy()

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        key = ("loo", tuple(prompts), tuple(labels))
        return self._ask(key, lambda: self.model.loo_logprobs(prompts, labels))

    def query_logprobs(self, demos, labels, queries) -> np.ndarray:
        key = ("query", tuple(demos), tuple(labels), tuple(queries))
        return self._ask(key, lambda: self.model.query_logprobs(demos, labels, queries))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.model.count_tokens(texts)

    def save(self) -> None:
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self.memo))
            tmp.replace(self.path)


# -- data sets ------------------------------------------------------------------------------------
def control_rows(n: int, seed: int) -> list[dict]:
    """Pairs of two statements of one content; which is True is a coin flip."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    while len(rows) < n:
        adj, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        if (adj, noun) in seen:
            continue
        seen.add((adj, noun))
        a, b = (f"The {adj} {noun} is {p}." for p in rng.sample(PLACES, 2))
        y = rng.random() < 0.5
        pair = [(a, b, y), (b, a, not y)]
        rng.shuffle(pair)
        g = len(rows) // 2
        rows += [{"sentence": s, "other": o, "label": v, "consistency_id": g} for s, o, v in pair]
    return rows


def unpaired(rows: list[dict], seed: int) -> list[dict]:
    """One claim of each pair (a coin picks which), each its own group."""
    rng = random.Random(seed)
    return [dict(rows[k + rng.randrange(2)], consistency_id=k // 2) for k in range(0, len(rows), 2)]


def dataset(name: str, n: int, n_test: int, seed: int) -> tuple[str, list[dict], list[dict]]:
    """(task name, train rows, test rows) of one seed."""
    train, test = demo_split(n if name != "unpaired" else 2 * n, n_test, seed)
    if name == "demo":
        return "demo", train, test
    if name == "unpaired":
        return UNPAIRED.name, unpaired(train, seed)[:n], unpaired(test, seed + 1)
    return "demo", control_rows(n, seed), control_rows(n + n_test, seed + 1000)[n:]


# -- variants -------------------------------------------------------------------------------------
ROUNDS = 200
"""Rounds of a budgeted variant at most (the search's own memo answers repeats for free)."""
PAPER = SearchConfig.paper()
SCORE = SearchConfig(orders=1)
"""The objective every labelling is measured with (the default's, one order)."""
PRESETS = ("paper", "official", "default")
POLISH = SearchConfig(init="zero-shot", moves="consistent", keep_best=True, polish=True, orders=1)


def searched(cfg: SearchConfig, data, model, rule, seed, iterations, start=None) -> Search:
    search = Search(data.examples, model, rule, cfg)
    state = search.start([seed, 0, 0], start)
    for _ in search.run(state, iterations):
        pass
    for _ in settle(search, state):
        pass
    search.state = state  # type: ignore[attr-defined]
    return search


def v_paper_repair(data, model, rule, seed, budget) -> list[int]:
    s = searched(PAPER, data, model, rule, seed, math.ceil(PAPER.per_example * len(data)))
    labels = s.state.labels
    labels = complete(s, labels) if any(y < 0 for y in labels) else labels
    for fixed in repair(s, labels):
        labels = fixed
    return labels


def v_config(cfg: SearchConfig, iterations: bool) -> Callable:
    def run(data, model, rule, seed, budget) -> list[int]:
        n = math.ceil(cfg.per_example * len(data)) if iterations else 0
        return searched(cfg, data, model, rule, seed, n).state.labels

    return run


def v_fewshot_polish(data, model, rule, seed, budget) -> list[int]:
    structure = Structure(constraints(rule, data.examples), len(data))
    start = bootstrapped_fewshot(model, [ex.prompt for ex in data.examples], structure, 3).labels
    return searched(POLISH, data, model, rule, seed, 0, start).state.labels


def _polish_from(search: Search, labels: list[int], seed) -> State:
    state = search.start(seed, labels)
    for _ in settle(search, state):
        pass
    return state


def v_ils(data, model, rule, seed, budget) -> list[int]:
    with metered() as used:
        search = Search(data.examples, model, rule, POLISH)
        best = _polish_from(search, search.zero_shot(), [seed])
        rng = np.random.default_rng([seed, 1])
        comps = search.structure.components
        for _ in range(ROUNDS):
            if used.tokens >= budget:
                break
            labels = list(best.labels)
            for c in rng.choice(len(comps), size=max(1, len(comps) // 4), replace=False):
                i = comps[int(c)][0]
                labels = search.structure.move(labels, i, 1 - labels[i]) or labels
            state = _polish_from(search, labels, [seed])
            if state.utility > best.utility:
                best = state
    return best.labels


def random_consistent(structure: Structure, rng: np.random.Generator) -> list[int]:
    return structure.decode(rng.normal(size=structure.n))


def v_restarts(data, model, rule, seed, budget) -> list[int]:
    with metered() as used:
        search = Search(data.examples, model, rule, POLISH)
        best = _polish_from(search, search.zero_shot(), [seed])
        rng = np.random.default_rng([seed, 2])
        for _ in range(ROUNDS):
            if used.tokens >= budget:
                break
            state = _polish_from(search, random_consistent(search.structure, rng), [seed])
            if state.utility > best.utility:
                best = state
    return best.labels


def v_tempering(data, model, rule, seed, budget) -> list[int]:
    temps = [0.03, 0.1, 0.3, 1.0]
    with metered() as used:
        search = Search(data.examples, model, rule, POLISH)
        search.rng = rng = np.random.default_rng([seed, 3])
        reps = [search.zero_shot()] + [random_consistent(search.structure, rng) for _ in temps[1:]]
        us = [search.evaluate(r).utility for r in reps]
        best = (max(us), reps[int(np.argmax(us))])
        for _ in range(50 * ROUNDS):
            if used.tokens >= budget:
                break
            for k, t in enumerate(temps):
                i = search.sample(reps[k])
                y = search.propose(reps[k], i)
                prop = search.structure.move(reps[k], i, y) if y != reps[k][i] else None
                if prop is None:
                    continue
                u = search.evaluate(prop).utility
                if u > us[k] or rng.random() < math.exp((u - us[k]) / t):
                    reps[k], us[k] = prop, u
                    best = max(best, (u, prop))
            for k in range(len(temps) - 1):
                a = (us[k + 1] - us[k]) * (1 / temps[k] - 1 / temps[k + 1])
                if a >= 0 or rng.random() < math.exp(a):
                    reps[k], reps[k + 1], us[k], us[k + 1] = reps[k + 1], reps[k], us[k + 1], us[k]
    return _polish_from(search, best[1], [seed]).labels


VARIANTS: dict[str, Callable] = {
    "paper+repair": v_paper_repair,
    "paper+polish": v_config(replace(PAPER, keep_best=True, polish=True), True),
    "zs+polish": v_config(POLISH, False),
    "zs+polish/2": v_config(replace(POLISH, orders=2), False),
    "zs+polish/3": v_config(replace(POLISH, orders=3), False),
    "fewshot+polish": v_fewshot_polish,
    "zs+anneal": v_config(POLISH, True),
    "ils": v_ils,
    "restarts": v_restarts,
    "tempering": v_tempering,
}
BUDGETED = ("ils", "restarts", "tempering")
SIDE = ("zs+polish",)
"""The variants run on the unpaired and control sets beside paper and default."""


def icm_run(task: str, rows: list[dict], model, seed: int, algorithm: str, work: Path):
    """`icm run --algorithm ALGORITHM` on the rows, as a user runs it; (labels, summary)."""
    data = work / f"{task}-{seed}-{algorithm}.jsonl"
    files.write_jsonl(data, rows)
    cfg = replace(preset(algorithm), task=task, data=str(data), seed=seed)
    summary = Run.create(cfg, data.with_suffix(".run")).execute(model)
    labels = files.read_jsonl(data.with_suffix(".run") / "labels.jsonl")
    return [int(r["icm_label"]) for r in labels], summary


# -- measurements ---------------------------------------------------------------------------------
def utility(data, model, rule, labels) -> tuple[float, int]:
    ev = Search(data.examples, model, rule, SCORE).evaluate(labels)
    return ev.utility, ev.inconsistencies


def all_consistent(data, rule) -> list[list[int]]:
    st = Structure(constraints(rule, data.examples), len(data))
    per = [st.assignments(c, {}) for c in st.components]
    out = []
    for combo in itertools.product(*per):
        labels = [0] * len(data)
        for comp, a in zip(st.components, combo, strict=True):
            for i, v in zip(comp, a, strict=True):
                labels[i] = v
        out.append(labels)
    return out


def heldout(model, train, test, rule, labels: list[int] | None) -> tuple[float, float]:
    """Accuracy on the test claims after the train claims labelled `labels` (None: zero-shot),
    each claim alone (the paper's protocol) and each group decided jointly under the rule."""
    demos = [ex.prompt for ex in train.examples] if labels is not None else []
    lp = model.query_logprobs(demos, labels or [], [ex.prompt for ex in test.examples])
    lo = lp[:, 1] - lp[:, 0]
    gold = np.array(test.gold)
    joint = Structure(constraints(rule, test.examples), len(test)).decode(lo)
    return float(((lo > 0) == gold).mean()), float((np.array(joint) == gold).mean())


def agreement(labels, gold) -> float:
    return float(np.mean([a == b for a, b in zip(labels, gold, strict=True)]))


def one_seed(job: tuple[str, int, argparse.Namespace]) -> dict:
    """Every variant and baseline on one seed of one data set."""
    name, seed, args = job
    memo = args.memo / f"{name}-{args.n}-{seed}.pkl" if args.memo else None
    model = Replay(MODEL, memo)
    task_name, train_rows, test_rows = dataset(name, args.n, args.test, seed)
    task = get_task(task_name)
    train, test, rule = task.build(train_rows), task.build(test_rows), task.rule
    gold = [int(g) for g in train.gold]
    out: dict = {"name": name, "seed": seed, "u_gold": utility(train, model, rule, gold)[0]}
    if name == "demo" and args.enumerate:
        out["u_max"] = max(
            utility(train, model, rule, lab)[0] for lab in all_consistent(train, rule)
        )
        model.save()
    structure = Structure(constraints(rule, train.examples), len(train))
    prompts = [ex.prompt for ex in train.examples]
    labellings: dict[str, dict] = {}
    with metered() as used:
        labellings["zs+consistency"] = {"labels": zero_shot_consistent(model, prompts, structure)}
    labellings["zs+consistency"]["tokens"] = used.tokens
    with metered() as used:
        labellings["bootstrap"] = {
            "labels": bootstrapped_fewshot(model, prompts, structure, 3).labels
        }
    labellings["bootstrap"]["tokens"] = used.tokens
    order = np.random.default_rng(seed).permutation([k % 2 for k in range(len(train))])
    labellings["random"] = {"labels": [int(y) for y in order], "tokens": 0}
    labellings["gold"] = {"labels": gold, "tokens": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for v in PRESETS:
            with metered() as used:
                labels, summary = icm_run(task_name, train_rows, model, seed, v, Path(tmp))
            labellings[v] = {"labels": labels, "tokens": used.tokens, "summary": summary}
    budget = labellings["paper"]["tokens"]
    todo = [] if args.presets_only else list(VARIANTS) if name == "demo" else list(SIDE)
    for v in todo:
        t0 = time.perf_counter()
        with metered() as used:
            labels = VARIANTS[v](train, model, rule, seed, budget)
        labellings[v] = {"labels": labels, "tokens": used.tokens}
        labellings[v]["seconds"] = time.perf_counter() - t0
    for v in labellings.values():
        v["U"], v["inconsistencies"] = utility(train, model, rule, v["labels"])
        v["agreement"] = agreement(v["labels"], gold)
        v["heldout"], v["heldout_joint"] = heldout(model, train, test, rule, v["labels"])
    out["zero-shot"] = heldout(model, train, test, rule, None)
    out["concept"] = labellings["default"].pop("summary")["concept"]
    for v in PRESETS[:-1]:
        labellings[v].pop("summary")
    out["labellings"] = labellings
    out["computed"] = model.computed
    model.save()
    return out


MODEL = None


def _load(threads: int) -> None:
    global MODEL
    from icm.backends.loading import set_threads
    from icm.backends.transformers import TransformersModel

    set_threads(threads)
    MODEL = TransformersModel.load("default", fmt=get_task("demo").fmt)


def show(r: dict) -> None:
    u_max = f", U max {r['u_max']:.3f}" if "u_max" in r else ""
    c = r["concept"]
    print(
        f"## {r['name']} seed {r['seed']}: U gold {r['u_gold']:.3f}{u_max}; concept test: "
        f"{c['text']}; computed {r['computed']} tokens"
    )
    for k, v in r["labellings"].items():
        print(
            f"  {k:15s} U {v['U']:7.3f} bad {v['inconsistencies']} agree {v['agreement']:.2f} "
            f"heldout {v['heldout']:.3f} / joint {v['heldout_joint']:.3f} tokens {v['tokens']}"
        )
    print(flush=True)


def table(name: str, runs: list[dict]) -> None:
    """Means over seeds of every labelling on one data set."""
    print(f"### {name}: means over {len(runs)} seeds")
    print(
        "| labelling | U >= U gold | U = U max | agreement | breaks rule | held-out | joint | "
        "tokens |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in runs[0]["labellings"]:
        ls = [r["labellings"][k] for r in runs]
        ge = sum(v["U"] >= r["u_gold"] - 1e-9 for v, r in zip(ls, runs, strict=True))
        at = sum(
            abs(v["U"] - r["u_max"]) < 1e-9 for v, r in zip(ls, runs, strict=True) if "u_max" in r
        )
        at_s = f"{at}/{len(runs)}" if "u_max" in runs[0] else "-"
        print(
            f"| {k} | {ge}/{len(runs)} | {at_s} | "
            f"{np.mean([v['agreement'] for v in ls]):.3f} | "
            f"{sum(v['inconsistencies'] > 0 for v in ls)} | "
            f"{np.mean([v['heldout'] for v in ls]):.3f}"
            f" | {np.mean([v['heldout_joint'] for v in ls]):.3f} | "
            f"{np.mean([v['tokens'] for v in ls]):.0f} |"
        )
    zero = np.mean([r["zero-shot"] for r in runs], axis=0)
    verdicts = [r["concept"]["verdict"] for r in runs]
    print(
        f"zero-shot held-out {zero[0]:.3f} / joint {zero[1]:.3f}; concept test: "
        + ", ".join(f"{v} {verdicts.count(v)}/{len(runs)}" for v in sorted(set(verdicts)))
        + "\n"
    )


def last_line(results: dict[str, list[dict]]) -> str:
    demo = results.get("demo", [])
    if not demo:
        return "search: no demo runs"
    d = [r["labellings"]["default"] for r in demo]
    zs = [r["labellings"]["zs+consistency"] for r in demo]
    ge = sum(v["U"] >= r["u_gold"] - 1e-9 for v, r in zip(d, demo, strict=True))
    paper = np.mean([r["labellings"]["paper"]["tokens"] for r in demo])
    flagged = {k: sum(not r["concept"]["holds"] for r in results[k]) for k in results}
    n = len(demo)
    return (
        f"search seeds={n} found_ge_gold={ge}/{n} "
        f"agreement={np.mean([v['agreement'] for v in d]):.3f} "
        f"zs_consistency={np.mean([v['agreement'] for v in zs]):.3f} "
        f"heldout={np.mean([v['heldout'] for v in d]):.3f} "
        f"gold={np.mean([r['labellings']['gold']['heldout'] for r in demo]):.3f} "
        f"tokens_x={np.mean([v['tokens'] for v in d]) / paper:.2f} "
        f"control_flagged={flagged.get('control', 0)}/{len(results.get('control', []))} "
        f"concept_flagged={flagged['demo']}/{n}"
    )


def merged(paths: list[Path]) -> int:
    """The tables and the last line of the runs in several --json files, as one run prints them."""
    results: dict[str, list[dict]] = {}
    for path in paths:
        for name, runs in json.loads(path.read_text()).items():
            results.setdefault(name, []).extend(runs)
    for name, runs in results.items():
        table(name, runs)
    print(last_line(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--n", type=int, default=12, help="train claims per seed (default: 12)")
    p.add_argument("--test", type=int, default=32, help="held-out claims per seed")
    p.add_argument("--datasets", default="demo,control", help="of demo, unpaired, control")
    p.add_argument("--no-enumerate", dest="enumerate", action="store_false")
    p.add_argument("--presets-only", action="store_true", help="paper, official, default")
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--memo", type=Path, help="keep each seed's memo of model calls here")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: the tables and the last line of earlier --json files together "
        "(e.g. the demo half and the control half, run apart)",
    )
    args = p.parse_args(argv)
    if args.merge:
        return merged(args.merge)
    if args.memo:
        args.memo.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed, args) for name in args.datasets.split(",") for seed in range(args.seeds)]
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_load, initargs=(1,)) as pool:
        for r in pool.imap(one_seed, jobs):
            results.setdefault(r["name"], []).append(r)
            show(r)
    for name, runs in results.items():
        table(name, runs)
    if args.json:
        args.json.write_text(json.dumps(results, default=float))
    print(f"{time.perf_counter() - t0:.0f} s")
    print(last_line(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
