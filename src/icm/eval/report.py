"""`icm report RUN`: one self-contained HTML page about a run, readable offline and easy to share.

Everything is inline (CSS, and figures as base64 PNG), so the file can be mailed or attached as is.
A run still in progress gets a report of what it has so far.
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from typing import cast

from .. import files
from ..errors import IcmError
from ..run.checks import concept_text, diagnosis_text, fresh_text
from ..run.folder import BATCHES, LABELS, SUMMARY, TRACE, RunFolder, check_output, input_files
from ..run.labels import read_labels
from ..run.plan import load_data
from ..run.readback import read_summary, read_trace
from .icl import EVAL_JSON, cost_text, markdown, overlap_text, pgr_text, read_result
from .plots import balance_chart, compare_chart, eval_chart, trace_chart

REPORT = "report.html"
GENERATOR = "icm report"
MAX_FLIPS = 2000
"""Rows of the flips table; a longer trace is cut (the plots still show all of it)."""

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; font-size: 1.2em; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 1.35em; } .card span { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 9px; text-align: left; }
td { vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.yes td:first-child { border-left: 3px solid #27ae60; }
tr.no td:first-child { border-left: 3px solid #c0392b; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.claim { max-width: 420px; color: #444; }
.warn { border: 1px solid #e0a526; background: #fff8e6; border-radius: 6px; padding: 8px 14px; }
.warn ul { margin: 0.3em 0 0 0; }
"""


def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{b64}">'


def _num(x: object, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return escape(str(x))


def _table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _td(x: object, num: bool = False) -> str:
    return f'<td class="num">{_num(x)}</td>' if num else f"<td>{escape(str(x))}</td>"


def _traces(folder: Path) -> dict[str, list[dict]]:
    """The trace of each search, batch by batch, chain by chain, named "1" or "1.2"
    (batch 1, chain 2) when there is more than one.

    Only the searches the run's plan (else, in a run not planned yet, its batch folders) and
    config name are read: a chain folder copied in beside them is not the run's."""
    run = RunFolder(folder)
    plan, chains = run.read_plan(), run.read_config().chains
    if plan is not None:
        batches = len(plan.batches)
    else:
        found = [p for p in (folder / BATCHES).glob("[0-9][0-9][0-9]") if not p.is_symlink()]
        batches = 1 + max((int(p.name) for p in found), default=-1)
    out = {}
    for b in range(batches):
        for c in range(chains):
            path = run.chain(b, c) / TRACE
            if path.is_file() and not path.is_symlink():
                name = str(b + 1) + (f".{c + 1}" if chains > 1 else "")
                out[name] = read_trace(path)
    return out


def _claims(cfg) -> dict[str, tuple[str, int | None]]:
    """uid -> (prompt, gold), from the run's data file when it can still be read."""
    try:
        _, data = load_data(cfg)
    except (IcmError, OSError):
        return {}
    prompts = [ex.prompt for ex in data.examples]
    # The template's tail ("I think this claim is") is the same on every row: leave it out.
    cut = len(os.path.commonprefix([p[::-1] for p in prompts])) if len(prompts) > 1 else 0
    return {
        ex.uid: (p[: len(p) - cut].strip(), g)
        for ex, p, g in zip(data.examples, prompts, data.gold, strict=True)
    }


WORD = {-1: "unlabelled", 0: "False", 1: "True"}


def render(folder: str | Path) -> str:
    """The report of the run in `folder`, as HTML text."""
    run = RunFolder(folder)
    folder = run.path
    cfg = run.read_config()
    summary = read_summary(folder / SUMMARY)
    traces = _traces(folder)
    result = read_result(folder / EVAL_JSON)
    labels = read_labels(run) if (folder / LABELS).exists() else []
    parts = [
        f"<h1>ICM run {escape(folder.name)}</h1>",
        f'<p class="sub">task <b>{escape(cfg.task)}</b> &middot; model <b>{escape(cfg.model)}</b>'
        f" &middot; data {escape(cfg.data)}"
        + ("" if summary else " &middot; <b>in progress</b> (no summary.json yet)")
        + "</p>",
    ]
    if summary and summary.get("warnings"):
        items = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"])
        parts.append(f'<div class="warn"><b>Before trusting these labels</b><ul>{items}</ul></div>')
    parts.append(_cards(summary, traces))
    if summary:
        parts.append(_search_verdict(summary))
    settled = {k: [r for r in t if "polish" in r] for k, t in traces.items()}
    traces = {k: [r for r in t if "polish" not in r] for k, t in traces.items()}
    if any(traces.values()):
        parts.append("<h2>Search</h2>")
        parts.append(_img(trace_chart(traces), "U, T, inconsistencies and agreement"))
    if any(settled.values()):
        parts.append(_settled(settled))
    if labels:
        parts.append(_balance(labels))
    if result:
        parts.append("<h2>Evaluation: many-shot in-context accuracy</h2>")
        parts.append(_eval_table(result))
        parts.append(_img(eval_chart(result), "test accuracy by demonstration labels"))
    parts.append(_compare(folder))
    if any(traces.values()):
        parts.append(_flips(traces, _claims(cfg)))
    flat = {k: v for k, v in cfg.to_json().items() if k != "search"}
    flat.update({f"search.{k}": v for k, v in cfg.to_json()["search"].items()})
    parts.append("<h2>Configuration</h2>")
    parts.append(_table(["option", "value"], [[_td(k), _td(v)] for k, v in flat.items()]))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>ICM run {escape(folder.name)}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def _cards(summary: dict | None, traces: dict) -> str:
    """The key numbers: from summary.json, or from the last trace line of a run in progress."""
    if summary:
        cards = [
            ("U", summary.get("utility")),
            ("inconsistencies", summary.get("inconsistencies")),
            ("examples", summary.get("examples")),
            ("searched", f"{summary.get('searched_share', 0):.0%}"),
            ("True / False", f"{summary['labels']['true']} / {summary['labels']['false']}"),
            ("agreement with gold", summary.get("agreement")),
            ("iterations", summary.get("iterations")),
            ("accepted flips", summary.get("accepted")),
            ("model calls", summary.get("model_calls")),
            ("tokens", summary.get("tokens")),
            ("seconds", summary.get("seconds")),
            *_cost_cards(summary.get("cost"), summary.get("wall_seconds")),
        ]
        if summary.get("chains", 1) > 1:
            cards.insert(4, ("chain agreement", f"{summary['chain_agreement']:.0%}"))
        if summary.get("cached_tokens"):
            cards.append(("tokens from the server's cache", f"{summary['cached_share']:.0%}"))
        if summary.get("approximate_scores"):
            cards.append(("approximate scores", f"{summary['approximate_share']:.1%}"))
    else:
        last = list(traces.values())[-1][-1] if traces and list(traces.values())[-1] else {}
        cards = [
            ("U", last.get("U")),
            ("inconsistencies", last.get("inconsistencies")),
            ("labelled", last.get("labelled")),
            ("iterations", last.get("n")),
            ("agreement with gold", last.get("agreement")),
        ]
    parts = ['<h2>Summary</h2><div class="cards">']
    for name, value in cards:
        digits = 1 if "seconds" in name else {"U": 2}.get(name, 3)
        shown = _num(value, digits) if not isinstance(value, str) else escape(value)
        parts.append(f'<div class="card"><b>{shown}</b><span>{escape(name)}</span></div>')
    return "\n".join([*parts, "</div>"])


def _cost_cards(cost: dict | None, wall: float | None) -> list[tuple[str, object]]:
    """The search's and the review's share of what the run spent (the cards above are the sum),
    and the wall time; none for a summary written before they were recorded."""
    if not isinstance(cost, dict):
        return []
    cards: list[tuple[str, object]] = []
    for part in ("search", "review"):
        p = cost.get(part) or {}
        cards.append((f"{part}: calls / tokens", f"{p.get('calls')} / {p.get('tokens')}"))
        cards.append((f"{part}: seconds", p.get("seconds")))
    return [*cards, ("wall seconds", wall)] if wall is not None else cards


def _balance(labels: list[dict]) -> str:
    t = sum(bool(r.get("icm_label")) for r in labels)
    st = sum(bool(r.get("icm_label")) for r in labels if r.get("icm_searched"))
    sn = sum(1 for r in labels if r.get("icm_searched"))
    return "\n".join(
        [
            "<h2>Label balance</h2>",
            f"<p>{t} True and {len(labels) - t} False of {len(labels)} examples; the search "
            f"labelled {sn} ({st} True), the rest got the model's argmax given those.</p>",
            _img(balance_chart(t, len(labels) - t, st, sn - st), "label balance"),
        ]
    )


def _search_verdict(summary: dict) -> str:
    """U found, the best U visited, U of the gold labelling and the concept test, in words."""
    lines = []
    best = max(
        (
            c.get("best_utility", -1e18)
            for s in summary.get("per_batch", [])
            for c in s.get("per_chain", [])
        ),
        default=None,
    )
    found = f"U of the labels found: {summary['utility']:.3f}"
    if best is not None and best > -1e17:
        found += f" (the best state any search visited: {best:.3f})"
    lines.append(found)
    if summary.get("gold_utility") is not None:
        verdict = diagnosis_text(summary.get("diagnosis"), summary.get("batches", 1))
        lines.append(f"U of the gold labelling: {summary['gold_utility']:.3f}: {verdict}")
    if text := fresh_text(summary.get("fresh_order"), summary.get("batches", 1)):
        lines.append(text)
    concept = summary.get("concept") or {}
    if concept:
        counts = concept.get("batch_verdicts") or {}
        each = ", ".join(f"{v}: {n}" for v, n in counts.items() if n)
        lines.append(
            f"Concept test: {concept_text(concept)}"
            + (f" (batches: {each})." if each and concept.get("batches", 1) > 1 else ".")
        )
    items = "".join(f"<li>{escape(x)}</li>" for x in lines)
    return f"<h2>Search against objective</h2><ul>{items}</ul>"


def _settled(settled: dict[str, list[dict]]) -> str:
    """What happened after the iterations: back to the best state, completion, repair, polish."""
    rows = []
    for name, steps in settled.items():
        for r in steps:
            changed = ", ".join(map(str, r.get("changed", [])))
            rows.append([_td(name), _td(r.get("step")), _td(changed), _td(f"{r['U']:.3f}", True)])
    head = ["search", "step", "examples changed", "U after"]
    return "<h2>After the iterations</h2>" + _table(head, rows)


def _compare(folder: Path) -> str:
    """The head-to-head of two policies (`icm compare --out RUN`), when the run has one."""
    from .compare import COMPARE_JSON
    from .compare import markdown as compare_markdown
    from .compare import read_result as read_compare

    result = read_compare(folder / COMPARE_JSON)
    if not result:
        return ""
    head = compare_markdown(result).split("\n\n")[1]
    rows = []
    for name, s in [("all", result["overall"]), *result["categories"].items()]:
        lo, hi = s["ci95"] or (None, None)  # a [lo, hi] pair or null: both set or neither
        span = "-" if lo is None else f"{100 * lo:.1f} - {100 * cast(float, hi):.1f}"
        rows.append(
            [_td(name), _td(s["n"], True), _td(s["a_wins"], True), _td(s["b_wins"], True)]
            + [_td(s["ties"], True), _td(f"{100 * s['win_rate']:.1f}", True), _td(span)]
        )
    table = _table(["prompts", "n", "A wins", "B wins", "ties", "A's win rate (%)", "95% CI"], rows)
    return (
        f"<h2>Head to head: {escape(str(result['a']))} (A) against {escape(str(result['b']))} (B)"
        f"</h2><p>{escape(head)}</p>{table}" + _img(compare_chart(result), "win rate of A")
    )


def _eval_table(result: dict) -> str:
    context = markdown(result).split("\n\n")[0]
    joint = any("joint" in m for m in result["methods"].values())
    rows = []
    for m in result["methods"].values():
        lo, hi = m["ci95"]
        rows.append(
            [
                _td(m["title"]),
                _td(f"{100 * m['accuracy']:.1f}", True),
                _td(f"{100 * lo:.1f} - {100 * hi:.1f}"),
                _td(pgr_text(m)),
                *(
                    [_td(f"{100 * m['joint']['accuracy']:.1f}", True), _td(pgr_text(m["joint"]))]
                    if joint
                    else []
                ),
                _td(f"{m['correct']} / {m['n']}", True),
                _td(f"{m['demos']} ({m['demo_true']} True)", True),
                _td("-" if m["auc"] is None else f"{m['auc']:.2f}", True),
                _td(cost_text(m.get("label_cost")), True),
                _td(cost_text(m.get("eval_cost")), True),
            ]
        )
    head = ["method", "accuracy (%)", "95% CI", "PGR (95% CI)"]
    head += ["joint accuracy (%)", "joint PGR"] if joint else []
    head += ["correct / n", "demos", "AUC"]
    head += ["labelling: calls / tokens", "evaluation: calls / tokens"]
    note = (
        f"<p>{escape(overlap_text(result))}</p>" if result["demos"].get("dropped_overlap") else ""
    )
    return f"<p>{escape(context)}</p>" + _table(head, rows) + note


def _flips(traces: dict[str, list[dict]], claims: dict[str, tuple[str, int | None]]) -> str:
    many = len(traces) > 1
    rows, classes = [], []
    proposals = [(b, r) for b, t in traces.items() for r in t if not r.get("skipped")]
    accepted = sum(bool(r.get("accepted")) for _, r in proposals)
    for b, r in proposals[:MAX_FLIPS]:
        prompt, gold = claims.get(str(r.get("example")), ("", None))
        text = prompt.replace("\n", " / ")
        row = [_td(b, True)] if many else []
        row += [
            _td(r["n"], True),
            _td(f"{r['T']:.2f}", True),
            _td(r.get("example")),
            f'<td class="claim">{escape(text[:200] + ("..." if len(text) > 200 else ""))}</td>',
            _td(f"{WORD.get(r['previous'], r['previous'])} -> {WORD.get(r['proposed'])}"),
            _td("-" if gold is None else WORD[gold]),
            _td("-" if r["delta"] is None else f"{r['delta']:+.2f}", True),
            _td("accepted" if r.get("accepted") else "rejected"),
            _td(f"{r['U']:.2f}", True),
            _td(r.get("inconsistencies"), True),
            _td(r.get("fixes"), True),
        ]
        rows.append(row)
        classes.append("yes" if r.get("accepted") else "no")
    head = ["search"] if many else []
    head += ["n", "T", "example", "claim", "flip", "gold", "delta U", "decision", "U after"]
    head += ["inconsistencies", "fixes"]
    note = (
        f"<p>{len(proposals)} proposals that changed a label: {accepted} accepted, "
        f"{len(proposals) - accepted} rejected (proposals that change nothing are left out)"
        + (f"; the first {MAX_FLIPS} are shown" if len(proposals) > MAX_FLIPS else "")
        + ".</p>"
    )
    return "<h2>Flips</h2>" + note + _table(head, rows, classes)


def is_report(path: Path) -> bool:
    """Whether `path` is a report icm wrote (so writing it again destroys nothing)."""
    if not path.is_file() or path.is_symlink():  # opening a pipe to look would wait forever
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(400)
    except OSError:
        return False
    return GENERATOR.encode() in head


def write_report(
    folder: str | Path, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write the report (default: RUN/report.html). Another existing file is replaced only with
    `overwrite`, and never the run's own files or its data."""
    path = Path(out) if out else Path(folder) / REPORT
    cfg = RunFolder(folder).read_config()
    check_output(path, overwrite, is_report(path), input_files(cfg), folder)
    html = render(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, html)
    return path
