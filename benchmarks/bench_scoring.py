"""Leave-one-out scoring: divide and conquer over the KV cache (one subtree per forward pass, or
whole subtrees packed into one pass) against one prompt per term (naive).

For each N it prints, per method: prefill tokens, forward passes, wall seconds, tokens per second
and the share of the device's peak that represents (2 x parameters FLOPs per token, against a
matmul peak measured on the same device, dtype and threads), peak memory, and the largest
|difference| between the methods' log-probs. Each (method, N) runs in its own process, so peak
memory is its own. Naive wall time is extrapolated from `--sample` terms (each term is an
independent prompt; its token count is exact).

Models: the embedded default (`--model`, any name `icm run` takes), or `--random-config NAME`,
an architecture with random weights built here (nothing downloaded): llama-1b (Llama-3.2-1B's
shape) or llama-8b (Llama-3.1-8B's), with a small tokenizer trained here on the claims.
Claims: TruthfulQA from ../shared/data when present, else generated ones of about 60 tokens.

    .venv/bin/python benchmarks/bench_scoring.py                 # default model, CPU, N to 128
    .venv/bin/python benchmarks/bench_scoring.py --quick         # N = 16, 32
    python benchmarks/bench_scoring.py --random-config llama-8b --device cuda --dtype bfloat16

The last line reads: N=<N> tokens_ratio=<naive/dc> wall_ratio=<naive/dc> max_abs_diff=<x>
(dc: the faster divide-and-conquer variant).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = SHARED / "truthfulqa" / "train.json"
CONFIGS = {
    # hidden, layers, heads, kv heads, intermediate (the published shapes; our own vocabulary)
    "tiny": (128, 2, 4, 2, 256),
    "llama-1b": (2048, 16, 32, 8, 8192),
    "llama-8b": (4096, 32, 32, 8, 14336),
}


def claims(n: int) -> list[str]:
    """N claims as the truthfulqa task prompts them: real ones when the data is here."""
    from icm.tasks import get_task

    task = get_task("truthfulqa")
    if DATA.exists():
        return [ex.prompt for ex in task.load(DATA).examples[:n]]
    from icm.demo import make_demo_rows

    words = [r["sentence"] for r in make_demo_rows(2 * (n + 8), seed=0)]
    rng = random.Random(0)
    rows = [
        {"question": " ".join(rng.sample(words, 4)), "choice": " ".join(rng.sample(words, 3))}
        for _ in range(n)
    ]
    return [ex.prompt for ex in task.build(rows).examples]


def random_model(name: str, texts: list[str], device: str, dtype: str):
    """A causal LM of a known shape with random weights, and a BPE tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = [" True", " False", " true", " false"]
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<unk>", "<s>"])
    bpe.train_from_iterator(texts * 4 + words * 50, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>")
    hidden, layers, heads, kv, inter = CONFIGS[name]
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=131072,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, dtype))
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    return model.eval(), tok


def peak_flops(device, dtype) -> float:
    """FLOP/s of a large matmul on this device, dtype and thread count: the peak we compare to
    (the fastest of several tries, so a moment of other load on a shared machine does not lower
    it)."""
    import torch

    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reps = 4 if device.type == "cuda" else 1  # a GPU matmul is too short to time alone
    a @ b
    best = float("inf")
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best


def attended(method: str, prefix: int, demo: list[int], query: list[int]) -> int:
    """(query token, key) pairs the attention computes: sum over forward passes of q x (past +
    (q + 1) / 2) for q new tokens on `past` cached ones. Attention's cost grows with them."""
    n = len(demo)
    if method == "naive":
        lengths = [prefix + sum(demo) - demo[i] + query[i] for i in range(n)]
        return sum(t * (t + 1) // 2 for t in lengths)

    def run(q: int, past: int) -> int:
        return q * past + q * (q + 1) // 2

    def rec(lo: int, hi: int, pending: int, past: int) -> int:  # mirrors loo_logprobs' tree
        if hi - lo == 1:
            return run(pending + query[lo], past)
        mid, total = (lo + hi) // 2, 0
        for (a, b), (c, d) in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
            ext = pending + sum(demo[c:d])
            if b - a == 1:
                total += rec(a, b, ext, past)
            else:
                total += run(ext, past) + rec(a, b, 0, past + ext)
        return total

    return rec(0, n, prefix, 0)


def worker(args: argparse.Namespace, method: str, n: int) -> dict:
    """Score the N terms with one method in this process; report its cost and the terms."""
    import resource

    import torch

    from icm.backends.loading import pick_device, pick_dtype
    from icm.backends.transformers import TransformersModel

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    prompts = claims(n)
    pack = args.pack if method == "dc-packed" else 0
    scorer = "naive" if method == "naive" else "dc"
    if args.random_config:
        net, tok = random_model(args.random_config, prompts, str(device), dtype)
        model = TransformersModel(net, tok, scorer=scorer, pack_tokens=pack)
    else:
        model = TransformersModel.load(
            args.model, scorer=scorer, device=args.device, dtype=dtype, pack_tokens=pack
        )
    labels = [int(v) for v in np.random.default_rng(0).integers(0, 2, size=n)]
    params = sum(p.numel() for p in model.model.parameters())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.query_logprobs([], [], prompts[:1])  # warm up kernels and allocator
    calls0, tokens0 = model.calls, model.tokens
    sync()
    t0 = time.perf_counter()
    if method == "naive":
        idx = sorted(np.random.default_rng(1).choice(n, size=min(args.sample, n), replace=False))
        terms = model.naive_terms(prompts, labels, [int(i) for i in idx])
    else:
        idx = list(range(n))
        terms = model.loo_logprobs(prompts, labels)
    sync()
    wall = time.perf_counter() - t0
    tokens = model.tokens - tokens0
    prefix = len(model.prefix_ids)
    demo = [len(model._piece(p, y)) for p, y in zip(prompts, labels, strict=True)]
    query = [len(model._piece(p, -1)) for p in prompts]
    if method == "naive":  # every naive term is a whole prompt: count them all exactly
        tokens = sum(prefix + sum(demo) - demo[i] + query[i] for i in range(n))
    keys = attended("naive" if method == "naive" else "dc", prefix, demo, query)
    cfg = model.model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    embed = model.model.get_input_embeddings().weight.numel()
    # FLOPs: 2 per weight per token (the embedding lookup is free) and 4 per head dimension per
    # layer per attended (token, key) pair (q.k and the weighted sum of values).
    flops = 2 * (params - embed) * tokens + 4 * heads * head_dim * cfg.num_hidden_layers * keys
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "indices": [int(i) for i in idx],
        "terms": terms.tolist(),
        "tokens": tokens,
        "calls": model.calls - calls0,
        "wall": wall * (n / len(idx)),
        "sampled": len(idx) < n,
        "params": params,
        "keys": keys,
        "flops": flops,
        "peak_mib": peak,
        "peak_flops": peak_flops(device, getattr(torch, dtype)),
        "where": f"{device}, {dtype}, {args.threads} CPU thread(s)",
    }


def spawn(args: argparse.Namespace, method: str, n: int) -> dict:
    argv = [sys.executable, __file__, "--worker", method, str(n)]
    for key in ("model", "random_config", "device", "dtype", "threads", "sample", "pack"):
        value = getattr(args, key)
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{method} N={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 16, 32 only")
    p.add_argument("--sizes", type=int, nargs="*", help="the N to measure")
    p.add_argument("--methods", default="dc,dc-packed,naive", help="comma-separated")
    p.add_argument("--model", default="default", help="a model icm run takes (default: embedded)")
    p.add_argument("--random-config", choices=sorted(CONFIGS), help="random weights, this shape")
    p.add_argument("--device", help="torch device (default: cuda if any)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--sample", type=int, default=12, help="naive terms timed per N (default 12)")
    p.add_argument("--pack", type=int, default=4096, help="dc-packed: tokens per forward pass")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args, args.worker[0], int(args.worker[1]))))
        return
    sizes = args.sizes or ([16, 32] if args.quick else [16, 32, 64, 128])
    methods = args.methods.split(",")
    what = args.random_config and f"random {args.random_config}" or args.model
    head = f"{'N':>4} {'method':>9} {'tokens':>9} {'passes':>6} {'wall_s':>8} {'tok/s':>8}"
    print(head + f" {'peak%':>6} {'peak_MiB':>9}  note")
    last = ""
    for n in sizes:
        runs = {m: spawn(args, m, n) for m in methods}
        first = next(iter(runs.values()))
        if n == sizes[0]:
            print(
                f"# {what}: {first['params'] / 1e9:.2f}B parameters on {first['where']}; claims: "
                f"{'TruthfulQA' if DATA.exists() else 'generated'}; matmul peak "
                f"{first['peak_flops'] / 1e9:.0f} GFLOP/s"
            )
        for m, r in runs.items():
            rate = r["tokens"] / r["wall"]
            share = 100 * 2 * r["params"] * rate / r["peak_flops"]
            note = f"wall from {len(r['indices'])} of {n} terms" if r["sampled"] else ""
            print(
                f"{n:>4} {m:>9} {r['tokens']:>9} {r['calls']:>6} {r['wall']:>8.2f} {rate:>8.0f}"
                f" {share:>6.1f} {r['peak_mib']:>9.0f}  {note}"
            )
        dcs = [m for m in runs if m.startswith("dc")]
        if "naive" in runs and dcs:
            nv = runs["naive"]
            best = min(dcs, key=lambda m: runs[m]["wall"])
            for m in dcs:
                diff = np.abs(np.array(runs[m]["terms"])[nv["indices"]] - np.array(nv["terms"]))
                print(f"     max |{m} - naive| over {len(nv['indices'])} terms: {diff.max():.2e}")
            if len(dcs) == 2:
                both = np.abs(np.array(runs[dcs[0]]["terms"]) - np.array(runs[dcs[1]]["terms"]))
                print(f"     max |dc - dc-packed| over {n} terms: {both.max():.2e}")
            dc = runs[best]
            print(
                f"     flops_ratio={nv['flops'] / dc['flops']:.2f} (weights and attention; keys "
                f"a token attends to: {best} {dc['keys'] / dc['tokens']:.0f}, naive "
                f"{nv['keys'] / nv['tokens']:.0f}); wall_ratio / flops_ratio="
                f"{nv['wall'] / dc['wall'] / (nv['flops'] / dc['flops']):.2f}"
            )
            diff = np.abs(np.array(runs[best]["terms"])[nv["indices"]] - np.array(nv["terms"]))
            last = (
                f"N={n} tokens_ratio={nv['tokens'] / runs[best]['tokens']:.2f} "
                f"wall_ratio={nv['wall'] / runs[best]['wall']:.2f} max_abs_diff={diff.max():.2e}"
            )
    print(last)


if __name__ == "__main__":
    main()
