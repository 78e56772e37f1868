"""Leave-one-out scoring: divide and conquer over the KV cache vs one prompt per term.

Runs the default model on real TruthfulQA claims (../shared/data) for N = 16, 32, 64, 128 and
prints, per method, prefill tokens, wall seconds, peak memory and the largest |difference| between
the two methods' log-probs. Each (method, N) runs in its own process, so peak RSS is its own.

    python benchmarks/bench_scoring.py            # N up to 128 (naive sampled at large N)
    python benchmarks/bench_scoring.py --quick    # N up to 32

The last line reads: N=<N> tokens_ratio=<naive/dc> wall_ratio=<naive/dc> max_abs_diff=<x>
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "truthfulqa" / "train.json"


def claims(n: int) -> tuple[list[str], list[int]]:
    from icm.tasks import get_task

    data = get_task("truthfulqa").load(DATA)
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 2, size=n)]  # the labels do not change the cost
    return [ex.prompt for ex in data.examples[:n]], labels


def worker(method: str, n: int, sample: int, threads: int) -> dict:
    """Score the N terms with one method in this process; report its cost and the terms."""
    import torch

    from icm.backends.transformers import TransformersModel

    torch.set_num_threads(threads)
    model = TransformersModel.load("default", scorer=method)
    prompts, labels = claims(n)
    t0 = time.perf_counter()
    if method == "dc":
        idx = list(range(n))
        terms = model.loo_logprobs(prompts, labels)
    else:
        rng = np.random.default_rng(1)
        idx = sorted(rng.choice(n, size=min(sample, n), replace=False).tolist())
        terms = model.naive_terms(prompts, labels, idx)
    wall = time.perf_counter() - t0
    return {
        "indices": idx,
        "terms": terms.tolist(),
        "tokens": model.tokens,
        "calls": model.calls,
        "wall": wall,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def naive_tokens(n: int) -> int:
    """Exact prefill tokens of the naive method: every term is a whole prompt."""
    from icm.backends.transformers import TransformersModel

    model = TransformersModel.load("default")
    prompts, labels = claims(n)
    demo = [len(model._piece(p, y)) for p, y in zip(prompts, labels, strict=True)]
    query = [len(model._piece(p, -1)) for p in prompts]
    return sum(len(model.prefix_ids) + sum(demo) - demo[i] + query[i] for i in range(n))


def spawn(method: str, n: int, sample: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n), str(sample), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 16, 32 only")
    p.add_argument("--sizes", type=int, nargs="*", help="the N to measure")
    p.add_argument("--sample", type=int, default=12, help="naive terms timed per N (default 12)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        method, n, sample, threads = args.worker
        print(json.dumps(worker(method, int(n), int(sample), int(threads))))
        return
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: the benchmark needs the shared TruthfulQA claims")
    sizes = args.sizes or ([16, 32] if args.quick else [16, 32, 64, 128])
    print(f"default model (SmolLM2-135M, fp32, CPU, {args.threads} thread(s)); TruthfulQA claims")
    print(f"{'N':>4} {'method':>6} {'tokens':>9} {'calls':>6} {'wall_s':>8} {'peak_MiB':>9}  note")
    last = ""
    for n in sizes:
        dc = spawn("dc", n, n, args.threads)
        nv = spawn("naive", n, args.sample, args.threads)
        sampled = len(nv["indices"]) < n
        nv_wall = nv["wall"] * n / len(nv["indices"])
        nv_tokens = naive_tokens(n)
        dc_terms = np.array(dc["terms"])[nv["indices"]]
        diff = float(np.abs(dc_terms - np.array(nv["terms"])).max())
        note = (
            f"wall extrapolated from {len(nv['indices'])} of {n} terms (each an independent "
            "prompt); tokens exact"
            if sampled
            else "all terms"
        )
        print(
            f"{n:>4} {'dc':>6} {dc['tokens']:>9} {dc['calls']:>6} {dc['wall']:>8.2f} "
            f"{dc['peak_mib']:>9.1f}"
        )
        print(
            f"{n:>4} {'naive':>6} {nv_tokens:>9} {n:>6} {nv_wall:>8.2f} "
            f"{nv['peak_mib']:>9.1f}  {note}"
        )
        print(f"     max |dc - naive| over {len(nv['indices'])} terms: {diff:.2e}")
        last = (
            f"N={n} tokens_ratio={nv_tokens / dc['tokens']:.2f} "
            f"wall_ratio={nv_wall / dc['wall']:.2f} max_abs_diff={diff:.2e}"
        )
    print(last)


if __name__ == "__main__":
    main()
