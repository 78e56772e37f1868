"""The OpenAI-compatible backend against a local llama.cpp server (xllamacpp, the default model).

Scores the leave-one-out terms of N TruthfulQA claims (one request each) several times, each on a
freshly started server so no run inherits another's prompt cache, and prints per setting the
requests per second, prompt tokens, and the tokens the server took from its prefix cache:

  loo c=1       the divide-and-conquer order of `loo_orders`, one request in flight
  loo c=4       the same order, four in flight (the server has four slots)
  shuffled c=1  the same prompts in a random order: what the order buys in cache hits

    .venv/bin/python benchmarks/bench_server.py            # N=8, about 2-4 minutes on 2 cores
    .venv/bin/python benchmarks/bench_server.py --n 16 --threads 2

The server uses `--threads` CPU threads (default 1: the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from icm.backends.openai import OpenAIModel  # noqa: E402
from icm.run import resolve_task  # noqa: E402
from tests.server import LlamaServer  # noqa: E402


class Shuffled(OpenAIModel):
    """Sends the same prompts in a random order (results put back in place)."""

    def _score(self, prompts: list[str]):
        perm = list(range(len(prompts)))
        random.Random(0).shuffle(perm)
        out = super()._score([prompts[i] for i in perm])
        back = out.copy()
        back[perm] = out
        return back


def measure(cls: type, concurrency: int, prompts: list[str], labels: list[int], args) -> dict:
    task = resolve_task("truthfulqa")
    with LlamaServer(parallel=4, ctx=args.ctx, threads=args.threads) as srv:
        model = cls(srv.base_url, fmt=task.fmt, concurrency=concurrency)
        t0 = time.perf_counter()
        for r in range(args.rounds):
            # A different labelling each round: the prompts change, their prefixes partly not.
            model.loo_logprobs(prompts, [(y + r) % 2 for y in labels])
        dt = time.perf_counter() - t0
        model.close()
    return {
        "requests": model.calls,
        "seconds": dt,
        "req_per_s": model.calls / dt,
        "tokens": model.tokens,
        "cached_tokens": model.cached_tokens,
        "tok_per_s": (model.tokens - model.cached_tokens) / dt,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="claims (requests per round)")
    ap.add_argument("--rounds", type=int, default=2, help="leave-one-out rounds per setting")
    ap.add_argument("--threads", type=int, default=1, help="server CPU threads")
    ap.add_argument("--ctx", type=int, default=8192, help="server context")
    args = ap.parse_args()
    task = resolve_task("truthfulqa")
    data = task.load(str(SHARED / "truthfulqa" / "train.json")).first_groups(args.n)
    prompts = [ex.prompt for ex in data.examples][: args.n]
    labels = [i % 2 for i in range(len(prompts))]
    print(f"{len(prompts)} claims x {args.rounds} rounds, server threads={args.threads}")
    print(
        f"{'setting':14s} {'req':>4s} {'s':>7s} {'req/s':>6s} {'tokens':>7s} {'cached':>7s} "
        f"{'new tok/s':>9s}"
    )
    for name, cls, c in (
        ("loo c=1", OpenAIModel, 1),
        ("loo c=4", OpenAIModel, 4),
        ("shuffled c=1", Shuffled, 1),
    ):
        m = measure(cls, c, prompts, labels, args)
        print(
            f"{name:14s} {m['requests']:4d} {m['seconds']:7.1f} {m['req_per_s']:6.2f} "
            f"{m['tokens']:7d} {m['cached_tokens']:7d} {m['tok_per_s']:9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
