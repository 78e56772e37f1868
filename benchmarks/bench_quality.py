"""Label quality: many-shot accuracy with ICM labels vs gold labels vs random labels vs zero-shot.

Each data set is cut into train and test by question (group). ICM labels the train claims without
gold; every test claim is then scored after the same train claims as demonstrations, labelled by
ICM, with gold, at random (balanced), or after no demonstrations at all.

  demo        the demo concept (`icm demo`): is a sentence a statement or a question
  truthfulqa  a TruthfulQA subset of ../shared/data/truthfulqa/train.json

Prints the ICM options, then per data set the ICM run's numbers and the accuracy table (95%
bootstrap intervals over questions). The default size takes about 10 minutes on 2 shared CPU cores;
the flags make it bigger:

    .venv/bin/python benchmarks/bench_quality.py
    .venv/bin/python benchmarks/bench_quality.py --train-questions 32 --test-questions 100 \\
        --iterations 100 --out runs/quality

The last line of each data set reads: <name> zero-shot=<acc> random=<acc> gold=<acc> icm=<acc>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHA = {"demo": 5.0}
"""The demo's consistency rule only bites when alpha does not swamp it (see icm.demo)."""
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def take_groups(rows: list[dict], idx: list[int], n: int) -> list[dict]:
    """The rows of the first `n` groups among rows `idx` (file order)."""
    seen: list[object] = []
    for i in idx:
        g = rows[i]["consistency_id"]
        if g not in seen:
            seen.append(g)
    keep = set(seen[:n])
    return [rows[i] for i in idx if rows[i]["consistency_id"] in keep]


def split_rows(rows: list[dict], seed: int, n_train: int, n_test: int, source: str):
    """`n_train` and `n_test` groups from the two halves of a seeded split by group."""
    from icm.eval import split_groups
    from icm.tasks import get_task

    data = get_task("truthfulqa").build(rows, source)
    train, test = split_groups(data, n_test / (n_train + n_test), seed)
    return take_groups(rows, train, n_train), take_groups(rows, test, n_test)


Split = tuple[str, list[dict], list[dict]]
"""The task to read the rows with, the train rows and the test rows."""


def demo_rows(args: argparse.Namespace) -> Split | None:
    from icm.demo import demo_split

    return "demo", *demo_split(args.demo_train, args.demo_test, args.seed)


def truthfulqa_rows(args: argparse.Namespace) -> Split | None:
    path = SHARED / "truthfulqa" / "train.json"
    if not path.exists():
        print(f"truthfulqa: skipped: {path} is absent\n")
        return None
    rows = json.loads(path.read_text())
    split = split_rows(rows, args.seed, args.train_questions, args.test_questions, str(path))
    return "truthfulqa", *split


def bench(name: str, task: str, train: list[dict], test: list[dict], work: Path, args) -> None:
    from icm import files
    from icm.config import RunConfig
    from icm.core.search import SearchConfig
    from icm.eval.icl import EvalConfig, evaluate, markdown, write
    from icm.run import Run, make_model, resolve_task

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "train.json", train)
    files.write_json(folder / "test.json", test)
    alpha = args.alpha if args.alpha is not None else ALPHA.get(name, 50.0)
    search = SearchConfig(score=args.score, alpha=alpha, clock=args.clock)
    cfg = RunConfig(
        task=task,
        data=str(folder / "train.json"),
        model=args.model,
        threads=args.threads,
        iterations=args.iterations,
        seed=args.seed,
        search=search,
    )
    t0 = time.perf_counter()
    model = make_model(cfg, resolve_task(cfg.task))
    run = Run.create(cfg, folder / "run", overwrite=True)
    s = run.execute(model)
    t1 = time.perf_counter()
    ecfg = EvalConfig(
        test=str(folder / "test.json"),
        max_demos=args.max_demos,
        context_tokens=args.context_tokens,
        seed=args.seed,
    )
    result = evaluate(run, ecfg, model)
    write(result, run.folder)
    t2 = time.perf_counter()
    print(f"## {name}")
    print(
        f"ICM on {s['examples']} train claims: {s['iterations']} iterations, "
        f"{s['accepted']} flips accepted, {s['searched']} searched, labels "
        f"{s['labels']['true']} True / {s['labels']['false']} False, agreement with gold "
        f"{s['agreement'] or 0:.3f}, {s['tokens']} tokens, {t1 - t0:.0f} s (model load included)"
    )
    kept = f" -> {run.folder}" if args.out else ""
    print(f"eval: {result['tokens']} tokens, {t2 - t1:.0f} s{kept}\n")
    print(markdown(result))
    accs = " ".join(f"{k}={v['accuracy']:.3f}" for k, v in result["methods"].items())
    print(f"{name} {accs}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo,truthfulqa", help="comma-separated (default: both)")
    p.add_argument("--train-questions", type=int, default=6, help="TruthfulQA train questions")
    p.add_argument("--test-questions", type=int, default=12, help="TruthfulQA test questions")
    p.add_argument("--demo-train", type=int, default=20, help="demo train claims")
    p.add_argument("--demo-test", type=int, default=32, help="demo test claims")
    p.add_argument("--iterations", type=int, default=24, help="ICM iterations per data set")
    p.add_argument("--score", default="mean-logodds", help="ICM score (default: mean-logodds)")
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of predictability in U (default: 5 demo, 50 truthfulqa)",
    )
    p.add_argument("--clock", default="iteration", help="n of the schedule: iteration or accepted")
    p.add_argument("--max-demos", type=int, default=None, help="cap on demonstrations")
    p.add_argument("--context-tokens", type=int, default=None, help="prompt-token budget")
    p.add_argument("--model", default="default", help="model (default: embedded SmolLM2-135M)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, search and evaluation")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    print(
        f"model={args.model} ICM: score={args.score} alpha={args.alpha or 'per data set'} "
        f"clock={args.clock} "
        f"iterations={args.iterations} seed={args.seed} threads={args.threads}; eval: "
        f"max_demos={args.max_demos} context_tokens={args.context_tokens or 'model context'}\n",
        flush=True,
    )
    sources = {"demo": demo_rows, "truthfulqa": truthfulqa_rows}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        for name in args.datasets.split(","):
            if name not in sources:
                p.error(f"unknown data set {name!r}; choose from {', '.join(sources)}")
            split = sources[name](args)
            if split:
                bench(name, *split, work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
