"""Prompt tokens a server must compute: icm's request pattern against the official code's, on
the same kind of server (a fresh llama.cpp process, one CPU thread, prompt cache on, the embedded
default model, the first N TruthfulQA claims):

  icm       the divide-and-conquer leave-one-out order, token-id prompts, the subtree's context
            computed once before its halves go to parallel streams, each prompt asked once
  official  the official code's pattern: every leave-one-out prompt with the other labelled
            claims in data-set order, as text, one evaluation per proposal and per
            ConsistencyFix option

Two measurements per N and pattern:
  evaluations  U of all N claims labelled, three times, each labelling two flips from the last
               (what consecutive iterations score once the labelled set has grown)
  search       ICM's search from K = 8 labelled claims, `--iterations` iterations: the prompt
               tokens computed (prompt tokens minus those served from the cache) per iteration,
               with the labelled set's size

The official code itself, run against llama.cpp with SmolLM2 on TruthfulQA, computed 2,300 of
9,500 prompt tokens per iteration at batch 16 and 17,300 per iteration at batch 32, growing with
the labelled set.

    .venv/bin/python benchmarks/bench_server.py                # N=16 and N=32
    .venv/bin/python benchmarks/bench_server.py --n 16 --iterations 4

The last line: N=<n> icm_computed_per_it=<x> official_computed_per_it=<y> ratio=<y/x>
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from icm.backends.answers import label_logprobs, top_logprobs  # noqa: E402
from icm.backends.http import Abort  # noqa: E402
from icm.backends.openai import OpenAIModel  # noqa: E402
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
            body = self.answers.send((prompt,), Abort(), used)
            out[i] = label_logprobs(top_logprobs(body), self.answers.variants, self.answers.k)
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


def computed(model: OpenAIModel) -> int:
    return model.tokens - model.cached_tokens


def evaluations(name: str, prompts: list[str], task, args) -> list[int]:
    """Computed prompt tokens of three evaluations of U over all N claims."""
    rng = np.random.default_rng(args.seed)
    labels = [int(y) for y in rng.integers(0, 2, size=len(prompts))]
    out = []
    with LlamaServer(parallel=args.slots, ctx=args.ctx, threads=args.threads) as srv:
        cls = Official if name == "official" else OpenAIModel
        model = cls(srv.base_url, fmt=task.fmt, concurrency=args.concurrency)
        for _ in range(3):
            before = computed(model)
            model.loo_logprobs(prompts, labels)
            out.append(computed(model) - before)
            for i in rng.choice(len(labels), size=2, replace=False):
                labels[i] = 1 - labels[i]
    return out


def search(name: str, rows: list[dict], task, args) -> tuple[list[int], list[int]]:
    """Computed prompt tokens, and the labelled set's size, of each search iteration."""
    examples = task.build(rows, "bench").examples
    with LlamaServer(parallel=args.slots, ctx=args.ctx, threads=args.threads) as srv:
        cls = Official if name == "official" else OpenAIModel
        model = cls(srv.base_url, fmt=task.fmt, concurrency=args.concurrency)
        memo = 0 if name == "official" else 256
        run = Search(examples, model, task.rule, SearchConfig(memo_size=memo))
        state = run.start(args.seed)
        tokens, sizes, last = [], [], computed(model)
        for _ in run.run(state, args.iterations):
            tokens.append(computed(model) - last)
            sizes.append(sum(y >= 0 for y in state.labels))
            last = computed(model)
    return tokens, sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="16,32", help="claims (comma-separated sizes)")
    ap.add_argument("--iterations", type=int, default=8)
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
        prompts = [ex.prompt for ex in task.build(rows[:n], "bench").examples]
        print(f"N={n} TruthfulQA claims, seed {args.seed}")
        per_eval = {p: evaluations(p, prompts, task, args) for p in ("icm", "official")}
        for p, tokens in per_eval.items():
            print(f"  evaluations of U over all {n}, {p:8s}: computed {tokens}", flush=True)
        per_it = {}
        for p in ("icm", "official"):
            tokens, sizes = search(p, rows[:n], task, args)
            per_it[p] = np.mean(tokens)
            steps = " ".join(f"{t}({k})" for t, k in zip(tokens, sizes, strict=True))
            print(f"  search, {p:8s}: computed per iteration (labelled): {steps}", flush=True)
        e = np.mean(per_eval["official"]) / max(np.mean(per_eval["icm"]), 1)
        print(f"N={n} evaluation_ratio={e:.1f}")
        a, b = per_it["icm"], per_it["official"]
        print(
            f"N={n} icm_computed_per_it={a:.0f} official_computed_per_it={b:.0f} "
            f"ratio={b / max(a, 1):.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
