"""The concept test's verdicts, measured: controls with no concept and concepts the default model
holds, at several batch sizes, each seed its own claims, each through `icm run` with its
defaults (the search, then the review: the concept test and U of the gold labelling).

Data sets (generated here; every group is a pair of which exactly one claim is True):

  demo       the demo concept: one content said as a statement (True) and asked as a question
  sentiment  a second concept, probed with the default model (16 gold-labelled demonstrations:
             92-100% held-out accuracy): a positive and a negative review of one thing, the
             claim "This review is positive."
  coin       control: two statements of one content that differ in a place; a coin picks the
             True one, so the label has nothing to do with the text
  codes      control: two made-up product codes; a coin picks the "valid" one

Per (data set, N, seed) it records the verdict, its p and effect, agreement with gold, U of
the labels found and of the gold labelling (under the search's order and a fresh one), and the
tokens of the search, of the concept test and of the whole review. Results go to a JSON Lines
file as they come (`--out`); a second run with the same file only runs what is missing, and the
report is drawn from the file (`--report-only`). The stated false-pass rate is checked against
a simulation on the real null labellings: each null in turn tested against the others.

    .venv/bin/python benchmarks/bench_verdict.py                  # the full plan (hours)
    .venv/bin/python benchmarks/bench_verdict.py --plan quick     # about an hour on 2 cores
    .venv/bin/python benchmarks/bench_verdict.py --plan targets   # quick, then 1.5 h more

Last line: verdict seeds=S no_concept_holds=k/S held_no_concept=k/S too_small=N:f,...
stated_alpha=a tokens_x=N:t,...
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import control_rows  # noqa: E402

from icm import files  # noqa: E402
from icm.core import concept  # noqa: E402
from icm.demo import make_demo_rows  # noqa: E402
from icm.run import Run  # noqa: E402
from icm.run.config import RunConfig  # noqa: E402
from icm.tasks import get_task, register  # noqa: E402
from icm.tasks.custom import task_from_spec  # noqa: E402

PAIRS = {"rule": "asymmetry", "key": ["sentence", "other"]}
SENTIMENT = register(
    task_from_spec(
        {
            "name": "sentiment",
            "template": "Review: {sentence}\nClaim: This review is positive.\n"
            "I think this claim is",
            "group": "consistency_id",
            "consistency": PAIRS,
        },
        "bench_verdict sentiment",
        "sentiment",
    )
)
CODES = register(
    task_from_spec(
        {
            "name": "codes",
            "template": "Code: {sentence}\nClaim: This code is valid.\nI think this claim is",
            "group": "consistency_id",
            "consistency": PAIRS,
        },
        "bench_verdict codes",
        "codes",
    )
)
TASKS = {"demo": "demo", "sentiment": "sentiment", "coin": "demo", "codes": "codes"}
CONCEPTS, CONTROLS = ("demo", "sentiment"), ("coin", "codes")

THINGS = [
    "movie",
    "meal",
    "hotel",
    "book",
    "concert",
    "trip",
    "phone",
    "game",
    "show",
    "class",
    "car",
    "song",
    "party",
    "service",
    "room",
    "coffee",
    "museum",
    "flight",
    "pizza",
    "laptop",
    "camera",
    "bakery",
    "garden",
    "lecture",
    "podcast",
    "jacket",
    "bike",
    "sofa",
    "market",
    "beach",
    "train",
    "course",
    "salad",
    "theater",
    "festival",
    "app",
    "printer",
    "tour",
    "play",
    "zoo",
    "cafe",
]
GOOD = ("was wonderful", "was great", "was excellent", "was lovely", "was amazing", "was superb")
BAD = ("was terrible", "was awful", "was horrible", "was dreadful", "was boring", "was bad")


def pair_rows(pairs: list[tuple[str, str, bool]]) -> list[dict]:
    """Rows of the demo's layout from (first, second, first is True) pairs."""
    rows = []
    for g, (a, b, y) in enumerate(pairs):
        rows += [
            {"sentence": a, "other": b, "label": y, "consistency_id": g},
            {"sentence": b, "other": a, "label": not y, "consistency_id": g},
        ]
    return rows


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for thing in rng.sample(THINGS, n // 2):
        good, bad = f"The {thing} {rng.choice(GOOD)}.", f"The {thing} {rng.choice(BAD)}."
        pairs.append((good, bad, True) if rng.random() < 0.5 else (bad, good, False))
    return pair_rows(pairs)


def code_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def code() -> str:
        return "".join(rng.choices(string.ascii_uppercase, k=3)) + f"-{rng.randrange(10**4):04d}"

    return pair_rows([(code(), code(), rng.random() < 0.5) for _ in range(n // 2)])


def rows_of(name: str, n: int, seed: int) -> list[dict]:
    if name == "demo":
        return make_demo_rows(n, seed)
    if name == "sentiment":
        return sentiment_rows(n, seed)
    if name == "coin":
        return control_rows(n, seed)
    return code_rows(n, seed)


PLANS = {
    # (data sets, N, seeds): the targets' seeds (20 controls each at 12 claims, 20 concept
    # seeds at 24), the growth of the verdict with the batch, the cost at 48.
    "full": [
        (CONTROLS, 12, 20),
        (CONCEPTS, 12, 10),
        (CONCEPTS, 24, 10),
        (CONCEPTS, 48, 1),
    ],
    "quick": [(CONTROLS, 12, 10), (CONCEPTS, 12, 2), (CONCEPTS, 24, 3)],
    # quick, then the 20 concept seeds at 24 claims the target needs and one run at 48 for
    # the cost: about an hour and a half more on 2 cores
    "targets": [
        (CONTROLS, 12, 10),
        (CONCEPTS, 12, 2),
        (CONCEPTS, 24, 10),
        (("demo",), 48, 1),
    ],
}


# -- one run ------------------------------------------------------------------------------------
MODEL = None


def _load() -> None:
    global MODEL
    from icm.backends.loading import set_threads
    from icm.backends.transformers import TransformersModel

    set_threads(1)
    MODEL = TransformersModel.load("default", fmt=get_task("demo").fmt)


def one(job: tuple[str, int, int]) -> dict:
    """`icm run` with its defaults on one seed's claims; what the verdict benchmark reads."""
    name, n, seed = job
    t0 = time.perf_counter()
    rows = rows_of(name, n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "claims.jsonl"
        files.write_jsonl(data, rows)
        cfg = RunConfig(task=TASKS[name], data=str(data), seed=seed)
        s = Run.create(cfg, Path(tmp) / "run").execute(MODEL)
    c = s["concept"]
    batch = s["per_batch"][0]
    return {
        "name": name,
        "n": n,
        "seed": seed,
        "verdict": c["verdict"],
        "p": c["p"],
        "effect": c["effect"],
        "effect_upper": c["effect_upper"],
        "nulls": batch["concept"]["nulls"],
        "fresh_utility": batch["concept"]["utility"],
        "agreement": s["agreement"],
        "utility": s["utility"],
        "gold_utility": s["gold_utility"],
        "fresh": s["fresh_order"],
        "search_tokens": s["cost"]["search"]["tokens"],
        "test_tokens": batch["concept"]["cost"]["tokens"],
        "review_tokens": s["cost"]["review"]["tokens"],
        "seconds": time.perf_counter() - t0,
    }


# -- the report -----------------------------------------------------------------------------------
def recount(r: dict) -> str:
    """The verdict from the stored numbers under the current constants."""
    if r["nulls"] is None or len(r["nulls"]) < 3:
        return concept.SMALL
    return concept.predict(r["fresh_utility"], np.array(r["nulls"])).verdict


def simulated_alpha(results: list[dict]) -> tuple[float, int]:
    """Each real null labelling in turn tested against the other nulls of its batch: the share
    called "holds" (a labelling exchangeable with the nulls, on the model's own landscapes)."""
    hits = trials = 0
    for r in results:
        us = np.array(r["nulls"] or [])
        for j in range(len(us)):
            rest = np.delete(us, j)
            if len(rest) >= 3 and rest.std(ddof=1) > 0:
                trials += 1
                hits += concept.predict(us[j], rest).verdict == concept.HOLDS
    return (hits / trials if trials else float("nan")), trials


def table(results: list[dict]) -> None:
    print(
        "| data set | N | seeds | holds | no concept | too small | agreement | U(gold) >= U(found) "
        "| fresh: U(gold) >= U(found) | effect | test / search tokens | search tokens |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    keys = sorted({(r["name"], r["n"]) for r in results}, key=lambda k: (k[0] in CONTROLS, k))
    for name, n in keys:
        rs = [r for r in results if (r["name"], r["n"]) == (name, n)]
        v = [recount(r) for r in rs]
        ge = sum(r["gold_utility"] >= r["utility"] - 1e-9 for r in rs)
        fge = sum(r["fresh"]["gold_utility"] >= r["fresh"]["utility"] - 1e-9 for r in rs)
        eff = [r["effect"] for r in rs if r["effect"] is not None]
        print(
            f"| {name} | {n} | {len(rs)} | {v.count(concept.HOLDS)} | {v.count(concept.NONE)} | "
            f"{v.count(concept.SMALL)} | {np.mean([r['agreement'] for r in rs]):.3f} | "
            f"{ge}/{len(rs)} | {fge}/{len(rs)} | {np.mean(eff):.2f} | "
            f"{np.mean([r['test_tokens'] / r['search_tokens'] for r in rs]):.2f} | "
            f"{np.mean([r['search_tokens'] for r in rs]):.0f} |"
        )


def last_line(results: list[dict]) -> str:
    controls = [r for r in results if r["name"] in CONTROLS]
    held = [r for r in results if r["name"] in CONCEPTS and r["n"] >= 24 and r["agreement"] >= 0.9]
    ns = sorted({r["n"] for r in results})
    small = {n: np.mean([recount(r) == concept.SMALL for r in results if r["n"] == n]) for n in ns}
    ratio = {
        n: np.mean([r["test_tokens"] / r["search_tokens"] for r in results if r["n"] == n])
        for n in ns
    }
    k = sum(recount(r) == concept.HOLDS for r in controls)
    h = sum(recount(r) == concept.NONE for r in held)
    return (
        f"verdict seeds={len(controls)}+{len(held)} no_concept_holds={k}/{len(controls)} "
        f"held_no_concept={h}/{len(held)} "
        f"too_small={','.join(f'{n}:{small[n]:.2f}' for n in ns)} "
        f"stated_alpha={concept.ALPHA} "
        f"tokens_x={','.join(f'{n}:{ratio[n]:.2f}' for n in ns)}"
    )


def report(results: list[dict]) -> None:
    table(results)
    sim, trials = simulated_alpha(results)
    print(
        f"\nfalse-pass rate: stated {concept.ALPHA}; simulated {sim:.4f} over {trials} real null "
        "labellings, each tested against the other nulls of its batch"
    )
    held = [r for r in results if r["name"] in CONCEPTS]
    print(
        f"concept seeds below agreement 0.9 (left out of held_no_concept): "
        f"{sum(r['agreement'] < 0.9 for r in held)}/{len(held)}"
    )
    print(last_line(results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", choices=tuple(PLANS), default="full")
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    p.add_argument("--out", type=Path, default=Path("runs/bench_verdict.jsonl"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = files.read_jsonl(args.out) if args.out.exists() else []
    have = {(r["name"], r["n"], r["seed"]) for r in done}
    jobs = [
        (name, n, seed)
        for names, n, seeds in PLANS[args.plan]
        for seed in range(seeds)
        for name in names
        if (name, n, seed) not in have
    ]
    jobs.sort(key=lambda j: -j[1])  # the longest first, so the two workers end together
    if jobs and not args.report_only:
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_load) as pool:
            for r in pool.imap_unordered(one, jobs):
                files.append_jsonl(args.out, r)
                done.append(r)
                print(
                    f"{r['name']} N={r['n']} seed {r['seed']}: {r['verdict']} "
                    f"(effect {r['effect']}, agreement {r['agreement']:.2f}) {r['seconds']:.0f} s",
                    flush=True,
                )
        print(f"{time.perf_counter() - t0:.0f} s for {len(jobs)} runs")
    report(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
