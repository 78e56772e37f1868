"""Prompt tokens a server must compute per ICM iteration: icm's request pattern against the
official code's, on the same kind of server.

Both run ICM's search (Algorithm 1 and 2) on the first N TruthfulQA claims with the embedded
default model behind a fresh llama.cpp server (one CPU thread, prompt cache on):

  icm       the divide-and-conquer leave-one-out order, token-id prompts, the subtree's context
            computed once before its halves go to parallel streams, a labelling scored once
  official  the official code's pattern: every leave-one-out prompt with the other labelled
            claims in data-set order, one evaluation per proposal and per ConsistencyFix option

and prints, per iteration, the prompt tokens the server computed (prompt tokens minus those it
took from its cache). The official code itself, run against llama.cpp with SmolLM2 on TruthfulQA,
computed 2,300 of 9,500 prompt tokens per iteration at batch 16 and 17,300 at batch 32, growing
with the labelled set.

    .venv/bin/python benchmarks/bench_server.py                # N=16 and N=32
    .venv/bin/python benchmarks/bench_server.py --n 16 --iterations 4

The last line: N=<n> icm_computed_per_it=<x> official_computed_per_it=<y> ratio=<y/x>
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from icm.backends.http import Abort  # noqa: E402
from icm.backends.openai import OpenAIModel, label_logprobs, top_logprobs  # noqa: E402
from icm.core.model import charge  # noqa: E402
from icm.core.search import Search, SearchConfig  # noqa: E402
from icm.tasks import get_task  # noqa: E402
from tests.server import LlamaServer  # noqa: E402


class Official(OpenAIModel):
    """The official code's requests: prompt i holds every other labelled claim in data-set order,
    sent as text, one after the other, every time U is evaluated."""

    def _each(self, prompts: list[str]) -> np.ndarray:
        out, used = np.zeros((len(prompts), 2)), []
        for i, prompt in enumerate(prompts):
            body = self._send((prompt,), Abort(), used)
            out[i] = label_logprobs(top_logprobs(body), self.variants, self.k)
        charge(self, len(used), sum(t for t, _ in used), sum(c for _, c in used))
        return out

    def loo_logprobs(self, prompts: Sequence[str], labels: Sequence[int]) -> np.ndarray:
        demos = [self.fmt.demo(p, y) for p, y in zip(prompts, labels, strict=True)]
        return self._each(
            [
                self.fmt.prefix + "".join(d for j, d in enumerate(demos) if j != i) + prompts[i]
                for i in range(len(prompts))
            ]
        )

    def query_logprobs(self, demos, labels, queries) -> np.ndarray:
        context = self.fmt.prefix + "".join(
            self.fmt.demo(p, y) for p, y in zip(demos, labels, strict=True)
        )
        return self._each([context + q for q in queries])


def pattern(name: str, prompts: list, task, args) -> list[int]:
    """Computed prompt tokens of each of `args.iterations` iterations."""
    examples = task.build(prompts, "bench").examples
    with LlamaServer(parallel=args.slots, ctx=args.ctx, threads=args.threads) as srv:
        cls = Official if name == "official" else OpenAIModel
        model = cls(srv.base_url, fmt=task.fmt, concurrency=args.concurrency)
        memo = 0 if name == "official" else 256
        search = Search(examples, model, task.rule, SearchConfig(memo_size=memo))
        state = search.start(args.seed)
        computed, last = [], model.tokens - model.cached_tokens
        t0 = time.perf_counter()
        for _ in search.run(state, args.iterations):
            now = model.tokens - model.cached_tokens
            computed.append(now - last)
            last = now
        print(
            f"  {name:8s} {time.perf_counter() - t0:6.0f} s, {model.calls} requests, "
            f"{model.tokens} prompt tokens, {model.cached_tokens} from the cache; computed per "
            f"iteration: {' '.join(map(str, computed))}",
            flush=True,
        )
        return computed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="16,32", help="claims (comma-separated sizes)")
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=1, help="icm's streams per evaluation")
    ap.add_argument("--slots", type=int, default=4, help="server slots")
    ap.add_argument("--threads", type=int, default=1, help="server CPU threads")
    ap.add_argument("--ctx", type=int, default=8192, help="server context")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    task = get_task("truthfulqa")
    path = SHARED / "truthfulqa" / "train.json"
    if not path.exists():
        print(f"bench_server: {path} is absent", file=sys.stderr)
        return 2
    rows = task.load(path).rows
    for n in (int(x) for x in args.n.split(",")):
        print(f"N={n} TruthfulQA claims, {args.iterations} iterations, seed {args.seed}")
        ours = pattern("icm", rows[:n], task, args)
        official = pattern("official", rows[:n], task, args)
        a, b = np.mean(ours), np.mean(official)
        print(
            f"N={n} icm_computed_per_it={a:.0f} official_computed_per_it={b:.0f} "
            f"ratio={b / max(a, 1):.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
