"""A fleet of inference servers: two llama.cpp replicas behind vllm-router against one server.

The same `icm run` (4 batches of 16 TruthfulQA claims, 8 iterations each, --workers 4: the four
batches searched at once) goes three times to real servers on 127.0.0.1, each server a fresh
process with one CPU thread serving the embedded default model:

  sequential  one server, --workers 1: the reference labels
  one server  one server, --workers 4
  replicas=2  two servers behind vllm-router (cache-aware routing on token-id prompts)

and prints wall time, requests, prompt tokens, the share the servers took from their prefix
caches, and whether the labels equal the reference. Servers run in their exact mode (separate
slot caches, no flash attention), where a prompt's log-probs do not depend on what was cached.

    .venv/bin/python benchmarks/bench_fleet.py

The last line: replicas=2 speedup=<one server / replicas wall time> cached_share=<x>
identical=yes|no
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from tests.server import LlamaServer, Router  # noqa: E402


def icm_run(base_url: str, out: Path, workers: int, args) -> tuple[float, dict, bytes]:
    cmd = [sys.executable, "-m", "icm", "run", "--backend", "openai", "--base-url", base_url]
    cmd += ["--task", "truthfulqa", "--data", str(SHARED / "truthfulqa" / "train.json")]
    cmd += ["--limit", str(args.batches * args.batch), "--batch-size", str(args.batch)]
    cmd += ["--iterations", str(args.iterations), "--seed", str(args.seed)]
    cmd += ["--workers", str(workers), "--concurrency", str(args.concurrency)]
    cmd += ["--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    labels = [json.loads(x)["icm_label"] for x in (out / "labels.jsonl").read_text().splitlines()]
    return wall, summary, json.dumps(labels).encode()


def servers(n: int, args) -> list[LlamaServer]:
    return [
        LlamaServer(parallel=args.slots, ctx=args.ctx, threads=1, exact=True).start()
        for _ in range(n)
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch", type=int, default=16, help="claims per batch")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=1, help="streams per search")
    p.add_argument("--slots", type=int, default=1, help="slots per server")
    p.add_argument("--ctx", type=int, default=4096, help="server context (per slot)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not (SHARED / "truthfulqa" / "train.json").exists():
        print(f"bench_fleet: {SHARED}/truthfulqa/train.json is absent", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="icm-fleet-"))
    rows = []
    print(
        f"{args.batches} batches x {args.batch} TruthfulQA claims, {args.iterations} iterations, "
        f"servers: 1 CPU thread, {args.slots} slot(s) each"
    )
    print(f"{'setting':12s} {'wall s':>7s} {'requests':>8s} {'tokens':>8s} {'cached':>7s} labels")
    for name, n, workers in (("sequential", 1, 1), ("one server", 1, 4), ("replicas=2", 2, 4)):
        fleet = servers(n, args)
        router = Router([f"http://127.0.0.1:{s.port}" for s in fleet]).start() if n > 1 else None
        try:
            url = router.base_url if router else fleet[0].base_url
            wall, summary, labels = icm_run(url, work / name.replace(" ", "-"), workers, args)
        finally:
            if router:
                router.kill()
            for s in fleet:
                s.kill()
        rows.append((name, wall, summary, labels))
        same = "reference" if len(rows) == 1 else ("same" if labels == rows[0][3] else "DIFFER")
        print(
            f"{name:12s} {wall:7.1f} {summary['model_calls']:8d} {summary['tokens']:8d} "
            f"{summary.get('cached_share', 0):7.2f} {same}",
            flush=True,
        )
    one, fleet = rows[1], rows[2]
    identical = all(r[3] == rows[0][3] for r in rows)
    share = fleet[2].get("cached_share", 0)
    print(
        f"replicas=2 speedup={one[1] / fleet[1]:.2f} cached_share={share:.2f} "
        f"identical={'yes' if identical else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
