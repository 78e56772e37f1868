"""`icm compare A B --prompts FILE --judge J`: two policies head to head.

Both policies complete the same prompts (sampling seeded alike, so two copies of one policy tie
on every prompt); the judge says which completion of each prompt is the better (see `judges`).
A's win rate counts a tie as half a win; its 95% interval is a bootstrap over prompts, overall
and per category when the prompts carry one (`category`, or Alpaca's `hh_type`). A pairwise
judge sees each pair in both orders: the share of its single-order verdicts that chose the
response shown first, and how often the two orders agree, measure its position bias.

Results: compare.json (every prompt, both completions and the verdict), compare.md and
compare.png in the --out folder (which may be a run folder: `icm report` then shows them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import files
from ..errors import IcmError
from ..options import check, options_of
from ..run.folder import RunFolder, check_output
from ..run.readback import problem, read_checked
from ..tasks.readers import ReadOptions
from ..train.prompts import Prompt, load_prompts, pick_template
from ..train.rlconfig import CompareConfig
from .icl import Resamples, interval

COMPARE_JSON, COMPARE_MD, COMPARE_PNG = "compare.json", "compare.md", "compare.png"
KIND = "icm compare"
_WINS = {
    "n": "count",
    "a_wins": "count",
    "b_wins": "count",
    "ties": "count",
    "win_rate": "number",
    "ci95": ("pair", None),
}
RESULT = {
    "a": "text",
    "b": "text",
    "judge": {"kind": "text", "path": "text", "demos?": "count"},
    "prompts": "text",
    "too_long": "count",
    "overall": _WINS,
    "categories": {"_": _WINS},
    "mean_length": {"a": "number", "b": "number"},
    "identical": "count",
    "position": ({"first_shown_wins": "number", "orders_agree": "number"}, None),
}
"""What the readers of compare.json (`icm report`) use, checked on read."""


def _is_compare(path: Path) -> bool:
    try:
        d = files.read_json(path)
    except IcmError:
        return False
    return isinstance(d, dict) and d.get("kind") == KIND


def check_out(out: Path, overwrite: bool, inputs: list[str]) -> None:
    """compare.json, .md and .png go into a folder: never over an input; over such files of
    another origin only with `overwrite`."""
    if out.exists() and not out.is_dir():
        raise IcmError(f"{out}: is a file; --out names a folder for {COMPARE_JSON} and the rest")
    run = out if RunFolder(out).made_by_icm else None
    ours = _is_compare(out / COMPARE_JSON)
    for name in (COMPARE_JSON, COMPARE_MD, COMPARE_PNG):
        check_output(out / name, overwrite, ours, inputs, run)


def outcomes(margin: np.ndarray, same: np.ndarray) -> np.ndarray:
    """1 where A's completion won, 0 where B's did, 0.5 for a tie (or identical completions)."""
    o = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return np.where(same, 0.5, o)


def win_stats(o: np.ndarray, resamples: int, seed: int) -> dict:
    """A's win rate with its 95% bootstrap interval over prompts."""
    draws = Resamples(list(range(len(o))), resamples, seed).accuracy(o)
    return {
        "n": len(o),
        "a_wins": int((o == 1).sum()),
        "b_wins": int((o == 0).sum()),
        "ties": int((o == 0.5).sum()),
        "win_rate": float(o.mean()),
        "ci95": interval(draws),
    }


def pair_accuracy(margins, resamples: int = 2000, seed: int = 0) -> dict:
    """A reward model's accuracy on held-out pairs from its r(chosen) - r(rejected) (a tie
    counts half), with the 95% bootstrap interval over pairs."""
    m = np.asarray(margins, dtype=float)
    s = win_stats(outcomes(m, np.zeros(len(m), dtype=bool)), resamples, seed)
    return {"n": s["n"], "accuracy": s["win_rate"], "ci95": s["ci95"]}


def position_bias(verdicts: dict, judged: np.ndarray) -> dict | None:
    """For a judge that saw both orders: how often the response shown first won, and how often
    the two orders named the same winner."""
    if "logodds_ab" not in verdicts or not judged.any():
        return None
    ab, ba = verdicts["logodds_ab"][judged], verdicts["logodds_ba"][judged]
    return {
        "first_shown_wins": float(np.concatenate([ab > 0, ba > 0]).mean()),
        "orders_agree": float(((ab > 0) != (ba > 0)).mean()),
        "a_wins_shown_first": float((ab > 0).mean()),
        "a_wins_shown_second": float((ba <= 0).mean()),
    }


def completions(a: str, b: str, prompts: list[Prompt], cfg: CompareConfig, device, say):
    """Both policies' completions of the prompts both can take (at most --max-prompt-tokens)."""
    from .judges import Policy

    texts, lengths, kept = {}, {}, prompts
    for side, name in (("a", a), ("b", b)):
        policy = Policy(name, cfg, device)
        if side == "a":
            n = policy.lengths([p.text for p in prompts])
            kept = [p for p, k in zip(prompts, n, strict=True) if k <= cfg.max_prompt_tokens]
            if not kept:
                raise IcmError(f"{cfg.prompts}: every prompt is longer than --max-prompt-tokens")
        say(f"{len(kept)} completions from {name}")
        texts[side], lengths[side] = policy.complete(kept)
        del policy
    return kept, texts, lengths


def summarise(prompts, texts, lengths, verdicts, judged, cfg: CompareConfig) -> dict:
    same = np.array([x == y for x, y in zip(texts["a"], texts["b"], strict=True)])
    margin = np.zeros(len(prompts))
    margin[judged] = verdicts["margin"]
    o = outcomes(margin, same)
    cats = sorted({p.category for p in prompts if p.category is not None})
    per = {}
    for c in cats:
        idx = np.array([p.category == c for p in prompts])
        per[c] = win_stats(o[idx], cfg.bootstrap, cfg.seed)
    full = {k: np.zeros(len(prompts)) for k in verdicts}
    for k, v in verdicts.items():
        full[k][judged] = v
    items = [
        {
            "row": p.row,
            "category": p.category,
            "prompt": p.text,
            "a": texts["a"][i],
            "b": texts["b"][i],
            "outcome": float(o[i]),
            **{k: round(float(full[k][i]), 4) for k in verdicts},
        }
        for i, p in enumerate(prompts)
    ]
    return {
        "overall": win_stats(o, cfg.bootstrap, cfg.seed),
        "categories": per,
        "identical": int(same.sum()),
        "mean_length": {s: float(np.mean(lengths[s])) for s in ("a", "b")},
        "items": items,
    }


def compare(
    a: str,
    b: str,
    cfg: CompareConfig,
    out: str | Path,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda text: None,
) -> dict:
    """Judge policy `a` against policy `b` on the prompts of `cfg.prompts`."""
    from ..backends.loading import pick_device, set_threads
    from .judges import open_judge

    check(cfg)
    if not cfg.prompts:
        raise IcmError("--prompts: the file of prompts both policies complete")
    device = pick_device(cfg.device)
    check_out(Path(out), overwrite, [cfg.prompts])
    template = pick_template(cfg.template, a, b)
    prompts = load_prompts(cfg.prompts, template, cfg.limit, options_of(ReadOptions, cfg))
    set_threads(cfg.threads)
    judge = open_judge(cfg.judge, cfg, device)  # a bad judge is refused before any generation
    t0 = time.perf_counter()
    kept, texts, lengths = completions(a, b, prompts, cfg, device, say)
    judged = np.array([x != y for x, y in zip(texts["a"], texts["b"], strict=True)])
    idx = np.flatnonzero(judged)
    say(f"judging {len(idx)} pairs with {cfg.judge} ({judge.kind})")
    pick = [kept[i] for i in idx]
    verdicts = (
        judge.margins(pick, [texts["a"][i] for i in idx], [texts["b"][i] for i in idx])
        if len(idx)
        else {"margin": np.zeros(0)}
    )
    result = {
        "kind": KIND,
        "a": a,
        "b": b,
        "judge": judge.describe(),
        "prompts": cfg.prompts,
        "template": template,
        "too_long": len(prompts) - len(kept),
        "position": position_bias(verdicts, np.ones(len(idx), dtype=bool)),
        "config": dataclasses.asdict(cfg),
        **summarise(kept, texts, lengths, verdicts, judged, cfg),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _row(name: str, s: dict) -> str:
    lo, hi = s["ci95"] or (float("nan"), float("nan"))
    return (
        f"| {name} | {s['n']} | {s['a_wins']} | {s['b_wins']} | {s['ties']} | "
        f"{_pct(s['win_rate'])} | {_pct(lo)} - {_pct(hi)} |"
    )


def markdown(result: dict) -> str:
    judge = result["judge"]
    how = (
        "a reward model (each completion scored on its own)"
        if judge["kind"] == "reward-model"
        else f"the model of ICM run {judge['path']} with {judge['demos']} ICM-labelled "
        "comparisons as demonstrations, both orders"
    )
    lines = [
        f"# {result['a']} (A) against {result['b']} (B)",
        "",
        f"Judge: {judge['path']}: {how}. Prompts: {result['prompts']} ({result['overall']['n']} "
        f"used, {result['too_long']} too long). A tie counts half; 95% bootstrap intervals "
        "over prompts.",
        "",
        "| prompts | n | A wins | B wins | ties | A's win rate | 95% CI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        _row("all", result["overall"]),
        *(_row(c, s) for c, s in result["categories"].items()),
        "",
        f"Mean completion length (tokens): A {result['mean_length']['a']:.1f}, "
        f"B {result['mean_length']['b']:.1f}; identical completions: {result['identical']}.",
    ]
    pos = result["position"]
    if pos:
        lines.append(
            f"Position bias: the response shown first won {_pct(pos['first_shown_wins'])} of "
            f"single-order verdicts (50% is none); the two orders agreed on "
            f"{_pct(pos['orders_agree'])} of the pairs."
        )
    return "\n".join(lines) + "\n"


def read_result(path: Path) -> dict | None:
    """compare.json as `icm compare` wrote it, checked; None when there is none."""
    return read_checked(path, "comparison", lambda d: problem(d, RESULT, "compare"))


def write(result: dict, out: str | Path) -> list[Path]:
    """compare.json, compare.md and (with matplotlib) compare.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / COMPARE_JSON, result)
    files.write_text(out / COMPARE_MD, markdown(result))
    written = [out / COMPARE_JSON, out / COMPARE_MD]
    try:
        from .plots import compare_chart
    except ImportError:
        return written
    files.write_bytes(out / COMPARE_PNG, compare_chart(result))
    return [*written, out / COMPARE_PNG]
