"""Label quality: does ICM beat cheap baselines on held-out claims, and does confidence mean much?

Each data set is cut into train and test claims by question (group). ICM labels the train claims
without gold (`icm run` defaults unless flags say otherwise); every test claim is then scored after
the same train claims as demonstrations, labelled by ICM, with gold, by bootstrapped few-shot, at
random, by zero-shot + consistency, or after none at all (`icm eval`), each test claim decided
alone and (tasks with a rule) each test group decided jointly. Per seed it prints the evaluation
table; at the end the mean and spread over seeds of each method's held-out accuracy, ICM's
agreement with gold, the performance gap recovered PGR = (ICM - zero-shot) / (gold - zero-shot),
the labelling cost of ICM and of the cheap baselines, and the confidence gap: how much more often
ICM's label equals gold on the more confident half of the train claims than on the less
confident half.

  demo        the demo concept (`icm demo`): is a sentence a statement or a question
  truthfulqa  a TruthfulQA subset of ../shared/data/truthfulqa/train.json

    .venv/bin/python benchmarks/bench_quality.py                  # the demo, 5 seeds
    .venv/bin/python benchmarks/bench_quality.py --datasets truthfulqa --seeds 1

The last line reads:
demo seeds=5 icm=<acc> gold=<acc> zs_consistency=<acc> bootstrap=<acc> random=<acc> zero=<acc>
pgr=<x> conf_gap=<x>
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from icm.eval.icl import METHODS

ROOT = Path(__file__).resolve().parents[1]
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


def demo_rows(args: argparse.Namespace, seed: int) -> tuple[str, list[dict], list[dict]]:
    from icm.demo import demo_split

    return "demo", *demo_split(args.demo_train, args.demo_test, seed)


def truthfulqa_rows(args: argparse.Namespace, seed: int) -> tuple[str, list[dict], list[dict]]:
    from icm.eval import split_groups
    from icm.tasks import get_task

    path = SHARED / "truthfulqa" / "train.json"
    rows = json.loads(path.read_text())
    data = get_task("truthfulqa").build(rows, str(path))
    n_train, n_test = args.train_questions, args.test_questions
    train, test = split_groups(data, n_test / (n_train + n_test), seed)
    return "truthfulqa", take_groups(rows, train, n_train), take_groups(rows, test, n_test)


def confidence_gap(rows: list[dict]) -> float:
    """Agreement with gold of the more confident half minus that of the less confident half."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["icm_confidence"])
    right = [rows[i]["icm_label"] == bool(rows[i]["label"]) for i in order]
    half = len(right) // 2
    return float(np.mean(right[:half]) - np.mean(right[half:]))


def one_seed(name: str, seed: int, work: Path, model, args) -> dict:
    from icm import files
    from icm.eval.icl import EvalConfig, evaluate, markdown, write
    from icm.run import Run
    from icm.run.config import RunConfig

    task, train, test = (demo_rows if name == "demo" else truthfulqa_rows)(args, seed)
    folder = work / f"{name}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "train.json", train)
    files.write_json(folder / "test.json", test)
    cfg = RunConfig(task=task, data=str(folder / "train.json"), seed=seed, threads=args.threads)
    for key in ("iterations", "chains", "workers", "score", "alpha"):
        value = getattr(args, key)
        if value is not None:
            target = cfg.search if key in ("score", "alpha") else cfg
            setattr(target, key, value)
    t0 = time.perf_counter()
    run = Run.create(cfg, folder / "run", overwrite=True)
    s = run.execute(model)
    t1 = time.perf_counter()
    result = evaluate(run.path, EvalConfig(test=str(folder / "test.json"), seed=seed), model)
    write(result, run.path)
    rows = files.read_jsonl(run.path / "labels.jsonl")
    m = result["methods"]
    print(
        f"## {name}, seed {seed}: ICM on {s['examples']} train claims ({s['chains']} chain(s), "
        f"{s['iterations']} iterations, searched {s['searched_share']:.0%}): agreement with "
        f"gold {s['agreement']:.3f}, {s['model_calls']} calls, {t1 - t0:.0f} s; warnings: "
        f"{'; '.join(w.split(':')[0] for w in s['warnings']) or 'none'}\n"
    )
    print(markdown(result), flush=True)
    return {
        "agreement": s["agreement"],
        "zs_agreement": m["zs-consistency"]["demo_agreement"],
        **{k: m[k]["accuracy"] for k in METHODS},
        **{f"{k} joint": m[k]["joint"]["accuracy"] for k in METHODS if "joint" in m[k]},
        "pgr": m["icm"].get("pgr"),
        "conf_gap": confidence_gap(rows),
        "icm_cost": m["icm"]["label_cost"],
        "bootstrap_cost": m["bootstrap"]["label_cost"],
        "zs_cost": m["zs-consistency"]["label_cost"],
    }


def spread(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.3f} (sd {np.std(xs):.3f}, {min(xs):.3f}-{max(xs):.3f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo", help="demo and/or truthfulqa (default: demo)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 (default: 5)")
    p.add_argument("--demo-train", type=int, default=20, help="demo train claims")
    p.add_argument("--demo-test", type=int, default=32, help="demo test claims")
    p.add_argument("--train-questions", type=int, default=6, help="TruthfulQA train questions")
    p.add_argument("--test-questions", type=int, default=12, help="TruthfulQA test questions")
    p.add_argument("--iterations", type=int, help="ICM iterations (default: icm run's)")
    p.add_argument("--chains", type=int, help="ICM chains (default: icm run's)")
    p.add_argument("--workers", type=int, help="searches at once (default: icm run's)")
    p.add_argument("--score", help="ICM score (default: icm run's)")
    p.add_argument("--alpha", type=float, help="ICM alpha (default: icm run's)")
    p.add_argument("--model", default="default", help="model (default: embedded SmolLM2-135M)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    from icm.backends import make_model
    from icm.run.config import RunConfig
    from icm.tasks import get_task

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        for name in args.datasets.split(","):
            if name == "truthfulqa" and not (SHARED / "truthfulqa" / "train.json").exists():
                print(f"truthfulqa: skipped: {SHARED} has no truthfulqa/train.json\n")
                continue
            task = get_task("demo" if name == "demo" else "truthfulqa")
            model = make_model(RunConfig(model=args.model, threads=args.threads), task.fmt)
            runs = [one_seed(name, seed, work, model, args) for seed in range(args.seeds)]

            def col(key: str, runs: list[dict] = runs) -> list:
                return [r[key] for r in runs]

            print(f"## {name}: {args.seeds} seeds, mean (sd, range)")
            keys = ["agreement", "zs_agreement", *METHODS, "pgr"]
            keys += [f"{k} joint" for k in METHODS if f"{k} joint" in runs[0]]
            for key in keys:
                print(f"  {key:22s} {spread(col(key))}")
            print(f"  conf_gap   {spread(col('conf_gap'))}")
            icm_calls = np.mean([c["model_calls"] or 0 for c in col("icm_cost")])
            boot_calls = np.mean([c["model_calls"] for c in col("bootstrap_cost")])
            icm_tokens = np.mean([c["tokens"] or 0 for c in col("icm_cost")])
            boot_tokens = np.mean([c["tokens"] for c in col("bootstrap_cost")])
            zs_calls = np.mean([c["model_calls"] for c in col("zs_cost")])
            print(
                f"  labelling cost: ICM {icm_calls:.0f} calls / {icm_tokens:.0f} tokens, "
                f"bootstrapped few-shot {boot_calls:.0f} calls / {boot_tokens:.0f} tokens, "
                f"zero-shot + consistency {zs_calls:.0f} calls\n"
            )
            mean = {
                k: np.mean([v for v in col(k) if v is not None] or [np.nan])
                for k in runs[0]
                if not k.endswith("_cost")
            }
            print(
                f"{name} seeds={args.seeds} icm={mean['icm']:.3f} gold={mean['gold']:.3f} "
                f"zs_consistency={mean['zs-consistency']:.3f} "
                f"bootstrap={mean['bootstrap']:.3f} random={mean['random']:.3f} "
                f"zero={mean['zero-shot']:.3f} pgr={mean['pgr']:.2f} "
                f"conf_gap={mean['conf_gap']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
