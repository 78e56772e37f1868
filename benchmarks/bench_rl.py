"""The paper's whole chain on the Alpaca pairs: ICM labels, reward models, RL, a head-to-head.

The 467 Alpaca comparisons of ../shared/data/alpaca/pairs.json are cut by pair (consistency_id)
into disjoint parts, seeded:

  train   a few short pairs (both orders): ICM labels them with no human label (`icm run`)
  test    held-out short pairs: the pairwise accuracy of every reward model (gold labels)
  judge   more short pairs: a reward model on their gold labels is the judge of the policies;
          none of the policies trained against it, and it starts from its own seed
  rl      queries the policies are trained on
  eval    queries the policies are compared on

Reward models (LoRA on the default model, the same options each) are trained on the train
pairs labelled by ICM, by ICM with its confidence as the pair margin, with gold labels and with
random labels. A policy is trained against each of the ICM, gold and random reward models with
the same budget (`icm rl`, GRPO), and each is compared with the base policy on the eval queries
under the judge (`icm compare`): win rate with a 95% bootstrap interval over queries.

    .venv/bin/python benchmarks/bench_rl.py                 # about half an hour on 2 cores
    .venv/bin/python benchmarks/bench_rl.py --quick         # a smoke run of the whole chain

The last line reads (accuracies on the held-out pairs, win rates against the base policy):
rl icm_rm_acc=<a> gold_rm_acc=<a> random_rm_acc=<a> win_icm=<w> win_gold=<w> win_random=<w>
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
PAIRS = SHARED / "alpaca" / "pairs.json"


def groups_of(rows: list[dict]) -> list[list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["consistency_id"], []).append(r)
    return list(out.values())


def flat(groups: list[list[dict]]) -> list[dict]:
    return [r for g in groups for r in g]


def split(rows: list[dict], args, count) -> dict[str, list[list[dict]]]:
    """Disjoint parts of whole pairs: short ones (an ICM row of at most --max-row-tokens) for
    the reward models, the others (a query of at most --max-query-tokens) for the policies."""
    groups = groups_of(rows)
    random.Random(args.seed).shuffle(groups)
    rows_n = count([f"{g[0]['question']}\n{g[0]['choice']}\n{g[0]['choice_2']}" for g in groups])
    query_n = count([g[0]["question"] for g in groups])
    short = [g for g, n in zip(groups, rows_n, strict=True) if n + 25 <= args.max_row_tokens]
    ids = {id(g) for g in short}
    rest = [
        g
        for g, q in zip(groups, query_n, strict=True)
        if id(g) not in ids and q <= args.max_query_tokens
    ]
    a, b = args.train_pairs, args.train_pairs + args.test_pairs
    c = b + args.judge_pairs
    if c > len(short) or args.rl_queries + args.eval_queries > len(rest):
        raise SystemExit(f"bench_rl: not enough pairs ({len(short)} short, {len(rest)} others)")
    return {
        "train": short[:a],
        "test": short[a:b],
        "judge": short[b:c],
        "rl": rest[: args.rl_queries],
        "eval": rest[args.rl_queries : args.rl_queries + args.eval_queries],
    }


def pairs_with(groups: list[list[dict]], labels: list[bool]) -> list[dict]:
    """The rm-format pairs of alpaca rows under the given labels (as `icm export` makes them)."""
    from icm.export import labelled_rows, records
    from icm.tasks import get_task

    rows = [{**r, "icm_label": y} for r, y in zip(flat(groups), labels, strict=True)]
    return records(labelled_rows(rows, get_task("alpaca"), "bench"), "rm")


def gold(groups: list[list[dict]]) -> list[bool]:
    return [bool(r["label"]) for r in flat(groups)]


def coin(groups: list[list[dict]], seed: int) -> list[bool]:
    """Random labels, consistent within each pair: one order True, the other False."""
    rng = random.Random(seed)
    out = []
    for g in groups:
        first = rng.random() < 0.5
        out += [first if k % 2 == 0 else not first for k in range(len(g))]
    return out


def run_icm(train: list[list[dict]], work: Path, args) -> Path:
    from icm import files
    from icm.backends import make_model
    from icm.run import Run
    from icm.run.config import RunConfig
    from icm.tasks import get_task

    data = work / "train.json"
    files.write_json(
        data, [{k: v for k, v in r.items() if k != "candidate_label"} for r in flat(train)]
    )
    cfg = RunConfig(task="alpaca", data=str(data), seed=args.seed, threads=args.threads)
    cfg.batch_size, cfg.iterations = args.icm_batch, args.icm_iterations
    run = Run.create(cfg, work / "icm-run", overwrite=True)
    s = run.execute(make_model(cfg, get_task("alpaca").fmt))
    warned = "; ".join(w.split(":")[0] for w in s["warnings"]) or "none"
    print(
        f"ICM on {s['examples']} rows ({len(train)} pairs): agreement with gold "
        f"{s['agreement']:.3f}, {s['inconsistencies']} inconsistencies, {s['iterations']} "
        f"iterations, {s['model_calls']} calls, {s['seconds']:.0f} s; warnings: {warned}",
        flush=True,
    )
    return run.path


def reward_models(parts: dict, icm_run: Path, work: Path, args) -> dict[str, Path]:
    """Reward models on the train pairs labelled by ICM (with and without the confidence
    margin), gold and random labels; and the judge, on the gold labels of the judge pairs."""
    from icm.backends.loading import resolve
    from icm.export import load_labelled, records
    from icm.train import TrainConfig
    from icm.train.prompts import task_prompt_template
    from icm.train.reward import margins, train_reward_pairs

    icm = load_labelled(icm_run)
    icm_pairs = records(icm, "rm")
    sets = {
        "icm": (icm_pairs, None),
        "icm+margin": (icm_pairs, margins(icm, icm_pairs, args.margin)),
        "gold": (pairs_with(parts["train"], gold(parts["train"])), None),
        "random": (pairs_with(parts["train"], coin(parts["train"], args.seed + 1)), None),
        "judge": (pairs_with(parts["judge"], gold(parts["judge"])), None),
    }
    cfg = TrainConfig(epochs=args.rm_epochs, lr=args.rm_lr, threads=args.threads, seed=args.seed)
    base, template = resolve("default"), task_prompt_template(icm.task)
    out = {}
    for name, (pairs, m) in sets.items():
        t0 = time.perf_counter()
        out[name] = work / f"rm-{name}"
        # The four under test share their initial head and LoRA weights, so only the labels
        # differ; the judge starts elsewhere, or it would share their initial preferences.
        seeded = dataclasses.replace(cfg, seed=args.seed + 1000) if name == "judge" else cfg
        info = train_reward_pairs(pairs, base, out[name], seeded, m, name, prompt_template=template)
        print(
            f"reward model {name}: {len(pairs)} pairs, {info['steps']} steps, loss "
            f"{info['loss_first']:.3f} -> {info['loss_last']:.3f}, margin mean "
            f"{info['margin_mean']:.3f}, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return out


def held_out_accuracy(rms: dict[str, Path], parts: dict, args) -> dict[str, dict]:
    import torch

    from icm.eval.compare import pair_accuracy
    from icm.train.reward import load_reward, score_pairs

    pairs = pairs_with(parts["test"], gold(parts["test"]))
    out = {}
    for name, folder in rms.items():
        tok, model = load_reward(str(folder))
        with torch.inference_mode():
            out[name] = pair_accuracy(score_pairs(model.eval(), tok, pairs), 2000, args.seed)
        lo, hi = out[name]["ci95"]
        print(
            f"  {name:12s} {out[name]['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
            f"{len(pairs)} pairs"
        )
    return out


def write_queries(groups: list[list[dict]], path: Path) -> Path:
    from icm import files

    files.write_jsonl(
        path, [{"question": g[0]["question"], "hh_type": g[0]["hh_type"]} for g in groups]
    )
    return path


def policies(rms: dict[str, Path], queries: Path, work: Path, args) -> dict[str, Path]:
    from icm.train.rl import train_policy
    from icm.train.rlconfig import RLConfig

    out = {}
    for name in ("icm", "gold", "random"):
        cfg = RLConfig(
            reward=str(rms[name]),
            prompts=str(queries),
            steps=args.rl_steps,
            lr=args.rl_lr,
            group_size=args.group_size,
            prompts_per_step=args.prompts_per_step,
            max_completion_length=args.completion_tokens,
            threads=args.threads,
            seed=args.seed,
            save_steps=10**6,
        )
        t0 = time.perf_counter()
        meta = train_policy(
            cfg, work / f"policy-{name}", overwrite=True, show=False, say=lambda _: None
        )
        first, last = meta["first"], meta["last"]
        print(
            f"policy {name}: {meta['steps']} steps, reward {first['reward']:+.3f} -> "
            f"{last['reward']:+.3f}, kl {last['kl']:.4f}, length {last['completion_length']:.1f}, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        out[name] = work / f"policy-{name}"
    return out


def head_to_head(pols: dict[str, Path], judge: Path, queries: Path, work: Path, args) -> dict:
    from icm.eval.compare import compare, markdown, write
    from icm.train.rlconfig import CompareConfig

    cfg = CompareConfig(
        prompts=str(queries),
        judge=str(judge),
        max_new_tokens=args.completion_tokens,
        threads=args.threads,
        seed=args.seed,
    )
    out = {}
    for name, policy in pols.items():
        result = compare(str(policy), "default", cfg, work / f"compare-{name}")
        write(result, work / f"compare-{name}")
        print(f"\n### policy on {name} labels against the base policy\n")
        print(markdown(result), flush=True)
        out[name] = result["overall"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the split and every training")
    p.add_argument("--train-pairs", type=int, default=8, help="pairs ICM labels")
    p.add_argument("--test-pairs", type=int, default=40, help="held-out pairs for RM accuracy")
    p.add_argument("--judge-pairs", type=int, default=48, help="gold pairs of the judge")
    p.add_argument("--rl-queries", type=int, default=32, help="queries the policies train on")
    p.add_argument("--eval-queries", type=int, default=64, help="queries they are compared on")
    p.add_argument("--max-row-tokens", type=int, default=100, help="longest ICM row of a pair")
    p.add_argument("--max-query-tokens", type=int, default=48, help="longest query")
    p.add_argument("--icm-batch", type=int, default=8, help="ICM batch size (rows)")
    p.add_argument("--icm-iterations", type=int, default=8, help="ICM iterations per batch")
    p.add_argument("--rm-epochs", type=int, default=3, help="reward-model epochs")
    p.add_argument("--rm-lr", type=float, default=2e-4, help="reward-model learning rate")
    p.add_argument("--margin", type=float, default=1.0, help="scale of the confidence margin")
    p.add_argument("--rl-steps", type=int, default=16, help="RL steps per policy")
    p.add_argument("--rl-lr", type=float, default=1e-4, help="RL learning rate")
    p.add_argument("--group-size", type=int, default=4, help="completions per query")
    p.add_argument("--prompts-per-step", type=int, default=2, help="queries per RL step")
    p.add_argument("--completion-tokens", type=int, default=32, help="tokens per completion")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: icm's)")
    p.add_argument("--quick", action="store_true", help="a few pairs and steps: a smoke run")
    p.add_argument("--out", help="keep everything here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_pairs, args.test_pairs, args.judge_pairs = 4, 8, 8
        args.rl_queries, args.eval_queries, args.rl_steps = 4, 8, 2
        args.icm_batch, args.completion_tokens, args.rm_epochs = 8, 8, 1
    if not PAIRS.exists():
        print(f"bench_rl: skipped: {PAIRS} is absent")
        return 0
    from icm.backends.loading import load_pretrained, set_threads

    set_threads(args.threads)
    tok, _ = load_pretrained("default")
    parts = split(
        json.loads(PAIRS.read_text()), args, lambda texts: [len(x) for x in tok(texts).input_ids]
    )
    print("parts (pairs): " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()), flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        icm_run = run_icm(parts["train"], work, args)
        rms = reward_models(parts, icm_run, work, args)
        print("pairwise accuracy on the held-out pairs (gold labels):")
        acc = held_out_accuracy(rms, parts, args)
        pols = policies(rms, write_queries(parts["rl"], work / "rl.jsonl"), work, args)
        wins = head_to_head(
            pols, rms["judge"], write_queries(parts["eval"], work / "eval.jsonl"), work, args
        )
        summary = {"accuracy": acc, "wins": wins, "seconds": round(time.perf_counter() - t0)}
        (work / "bench_rl.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwhole chain: {summary['seconds']} s")
    for name, s in wins.items():
        lo, hi = s["ci95"]
        print(
            f"  win rate of the policy on {name} labels: {s['win_rate']:.3f} (95% CI "
            f"{lo:.3f}-{hi:.3f}; won {s['a_wins']}, lost {s['b_wins']}, tied {s['ties']})"
        )
    print(
        f"rl icm_rm_acc={acc['icm']['accuracy']:.3f} gold_rm_acc={acc['gold']['accuracy']:.3f} "
        f"random_rm_acc={acc['random']['accuracy']:.3f} win_icm={wins['icm']['win_rate']:.3f} "
        f"win_gold={wins['gold']['win_rate']:.3f} win_random={wins['random']['win_rate']:.3f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
