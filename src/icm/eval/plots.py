"""Figures as PNG bytes: the evaluation bar chart and the search-trace panels.

Figures are built on matplotlib's Agg canvas directly, never through pyplot, so no display and no
global state are involved.
"""

from __future__ import annotations

import io
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {
    "zero-shot": "#9e9e9e",
    "random": "#c7b9a6",
    "bootstrap": "#7fa7c9",
    "gold": "#e0a526",
    "icm": "#6a4fb3",
}


def png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def eval_chart(result: dict) -> bytes:
    """Bars in the paper's order (zero-shot, random, gold, ICM); error bars are the 95% CI."""
    methods = result["methods"]
    names = list(methods)
    acc = [100 * methods[m]["accuracy"] for m in names]
    lo = [a - 100 * methods[m]["ci95"][0] for a, m in zip(acc, names, strict=True)]
    hi = [100 * methods[m]["ci95"][1] - a for a, m in zip(acc, names, strict=True)]
    fig = Figure(figsize=(1.3 * len(names) + 0.8, 3.6))
    ax = fig.add_subplot()
    x = range(len(names))
    ax.bar(
        x,
        acc,
        color=[COLORS.get(m, "#777") for m in names],
        yerr=[lo, hi],
        capsize=5,
        edgecolor="black",
        linewidth=0.6,
        width=0.65,
    )
    for i, a in enumerate(acc):
        ax.text(i, a + hi[i] + 1.5, f"{a:.1f}", ha="center", va="bottom", fontsize=9)
    ax.axhline(50, color="black", linestyle=":", linewidth=0.8)
    ax.set_xticks(list(x), [textwrap.fill(methods[m]["title"], 12) for m in names], fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{result['task']}: {result['test_claims']} test claims, {result['demos']['count']} demos",
        fontsize=10,
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return png(fig)


def trace_chart(batches: dict[str, list[dict]]) -> bytes:
    """U (with rejected proposals), T, inconsistencies, labelled set and gold agreement against
    iteration; one line per batch."""
    fig = Figure(figsize=(10, 6))
    axes = fig.subplots(2, 3).ravel()
    panels = [
        ("U", "U (x: rejected proposals)"),
        ("T", "temperature T"),
        ("inconsistencies", "inconsistent pairs"),
        ("labelled", "labelled examples"),
        ("agreement", "labelled set: agreement with gold"),
    ]
    many = len(batches) > 1
    for name, rows in batches.items():
        n = [r["n"] for r in rows]
        label = f"search {name}" if many else None
        for ax, (key, _) in zip(axes, panels, strict=False):
            ys = [r.get(key) for r in rows]
            pts = [(x, y) for x, y in zip(n, ys, strict=True) if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=label, linewidth=1.2)
        rej = [
            (r["n"], r["U"] + r["delta"])
            for r in rows
            if not r.get("accepted") and not r.get("skipped") and r.get("delta") is not None
        ]
        if rej:
            axes[0].scatter(*zip(*rej, strict=True), marker="x", s=14, color="#c0392b")
        acc = [(r["n"], r["U"]) for r in rows if r.get("accepted")]
        if acc:
            axes[0].scatter(*zip(*acc, strict=True), marker="o", s=10, color="#27ae60")
    for ax, (_, title) in zip(axes, panels, strict=False):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for k in (2, 3):  # counts: whole numbers only
        axes[k].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[4].set_ylim(-0.05, 1.05)
    if many:
        axes[0].legend(fontsize=7)
    axes[5].axis("off")
    fig.tight_layout()
    return png(fig)


def balance_chart(true: int, false: int, searched_true: int, searched_false: int) -> bytes:
    """ICM labels True/False, all examples and the searched (not argmax-filled) ones."""
    fig = Figure(figsize=(4.6, 2.4))
    ax = fig.add_subplot()
    rows = [("all", true, false), ("searched", searched_true, searched_false)]
    for k, (_, t, f) in enumerate(rows):
        ax.barh(k, t, color="#6a4fb3", label="True" if k == 0 else None)
        ax.barh(k, f, left=t, color="#bdbdbd", label="False" if k == 0 else None)
        ax.text(t + f, k, f"  {t} / {f}", va="center", fontsize=9)
    ax.set_yticks([0, 1], [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1, (true + false) * 1.3))
    ax.set_xlabel("examples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return png(fig)


def compare_chart(result: dict) -> bytes:
    """A's win rate against B, overall and per category, with 95% intervals; 50% is a draw."""
    rows = [("all", result["overall"]), *result["categories"].items()]
    fig = Figure(figsize=(6.4, 0.9 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    for k, (_, s) in enumerate(rows):
        lo, hi = s["ci95"] or (s["win_rate"], s["win_rate"])
        rate = 100 * s["win_rate"]
        ax.barh(k, rate, color="#6a4fb3" if k == 0 else "#9d8bd1", height=0.6)
        ax.errorbar(rate, k, xerr=[[rate - 100 * lo], [100 * hi - rate]], color="black", capsize=4)
        ax.text(100 * hi + 1.5, k, f"{rate:.1f}% (n={s['n']})", va="center", fontsize=9)
    ax.axvline(50, color="black", linestyle=":", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [textwrap.fill(str(r[0]), 16) for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 118)
    ax.set_xlabel("win rate of A (%), ties count half")
    head = textwrap.shorten(f"A: {result['a']}  vs  B: {result['b']}", 90)
    judge = textwrap.shorten(f"judge: {result['judge']['path']}", 90)
    ax.set_title(f"{head}\n{judge}", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return png(fig)
