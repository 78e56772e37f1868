"""`icm report`: rendered in a real headless Chromium and checked for what a reader would see."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import pytest

from icm import files
from icm.cli import main
from icm.core.search import SearchConfig
from icm.eval import EvalConfig, evaluate
from icm.eval.icl import write
from icm.eval.report import write_report
from icm.run import Run
from icm.run.config import RunConfig
from icm.run.folder import RunFolder

# Counts the page's images and those that decoded, once the page has loaded.
PROBE = (
    "<script>window.addEventListener('load', () => {"
    "const all = [...document.images];"
    "document.body.dataset.images = all.length;"
    "document.body.dataset.loaded = all.filter(i => i.complete && i.naturalWidth > 0).length;"
    "});</script>"
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed: `bash scripts/setup.sh dev` installs it")


def browse(page: Path, *mode: str) -> str:
    """Run headless Chromium on `page` with a fresh profile; its stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=page.parent)
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *mode,
        page.as_uri(),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(html: str, folder: Path) -> tuple[dict[str, str], str, str]:
    """The <body> attributes set by PROBE, the page's text and the live DOM itself."""
    page = folder / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = browse(page, "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return attrs, unescape(re.sub(r"<[^>]+>", " ", text)), dom


CHAIN = "batches/000/chain-0"


@pytest.fixture(scope="module")
def run(truthfulqa_run, tmp_path_factory, default_model) -> Run:
    """The session's real run (8 TruthfulQA claims, 4 iterations), copied, and its evaluation
    on held-out claims written into the copy."""
    folder = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(truthfulqa_run.path, folder)
    run = Run(RunFolder(folder), truthfulqa_run.cfg)
    ev = EvalConfig(split_test=0.5, limit=4, max_demos=4, bootstrap=500)
    write(evaluate(run.path, ev, default_model), run.path)
    return run


@pytest.mark.slow
def test_report_shows_images_and_numbers_in_a_browser(run, tmp_path):
    path = write_report(run.path)
    html = path.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    attrs, text, dom = rendered(html, tmp_path)
    assert attrs == {"images": "3", "loaded": "3"}  # trace, label balance, evaluation
    summary = json.loads((run.path / "summary.json").read_text())
    result = json.loads((run.path / "eval.json").read_text())
    trace = files.read_jsonl(run.path / CHAIN / "trace.jsonl")
    for shown in (
        f"{summary['utility']:.2f}",
        f"{summary['agreement']:.3f}",
        f"{summary['labels']['true']} / {summary['labels']['false']}",
        f"{summary['tokens']}",
        "mean-logodds",
    ):
        assert shown in text, shown
    for m in result["methods"].values():
        lo, hi = m["ci95"]
        row = f"{m['title']} {100 * m['accuracy']:.1f} {100 * lo:.1f} - {100 * hi:.1f}"
        assert row in " ".join(text.split()), row
    proposals = [r for r in trace if not r["skipped"]]
    decisions = re.findall(r"<td>(accepted|rejected)</td>", dom)
    assert decisions == ["accepted" if r["accepted"] else "rejected" for r in proposals]
    assert proposals
    assert "I think this claim is" not in text.split("Flips")[1]  # the template tail is cut


@pytest.mark.slow
def test_report_screenshot_is_not_blank(run, tmp_path):
    import matplotlib.image

    page = tmp_path / "report.html"
    write_report(run.path, page)
    shot = tmp_path / "shot.png"
    browse(page, f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars")
    pixels = matplotlib.image.imread(shot)[..., :3]
    ink = (pixels.mean(axis=2) < 0.9).mean()
    assert 0.02 < ink < 0.8 and pixels.std() > 0.05


@pytest.mark.slow
def test_a_broken_image_is_caught(run, tmp_path):
    html = write_report(run.path, tmp_path / "r.html").read_text()
    broken = html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    attrs, _, _ = rendered(broken, tmp_path)
    assert attrs == {"images": "3", "loaded": "2"}


@pytest.mark.slow
def test_report_of_a_run_in_progress_and_of_a_batched_run(run, tmp_path, default_model):
    partial = tmp_path / "partial"
    (partial / CHAIN).mkdir(parents=True)
    for name in ("config.json", f"{CHAIN}/trace.jsonl"):
        shutil.copy(run.path / name, partial / name)
    attrs, text, _ = rendered(write_report(partial).read_text(), tmp_path)
    assert attrs == {"images": "1", "loaded": "1"} and "in progress" in text
    last = files.read_jsonl(partial / CHAIN / "trace.jsonl")[-1]
    assert f"{last['U']:.2f}" in text

    cfg = RunConfig(
        task="truthfulqa",
        data=run.cfg.data,
        limit=8,
        iterations=1,
        batch_size=4,
        search=SearchConfig.paper(),
    )
    batched = Run.create(cfg, tmp_path / "batched")
    batched.execute(default_model)
    attrs, text, _ = rendered(write_report(batched.path).read_text(), tmp_path)
    assert attrs == {"images": "2", "loaded": "2"}
    paths = sorted(batched.path.glob("batches/*/chain-0/trace.jsonl"))
    traces = [files.read_jsonl(p) for p in paths]
    assert len(traces) == 2
    proposals = sum(not r["skipped"] for t in traces for r in t)
    assert f"{proposals} proposals that changed a label" in " ".join(text.split())


@pytest.mark.slow
def test_cli_report(run, tmp_path, capsys):
    out = tmp_path / "x" / "page.html"
    assert main(["report", str(run.path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


COMPARE = {
    "a": "policy-a",
    "b": "policy-b",
    "judge": {"kind": "icm-run", "path": "runs/x", "demos": 4},
    "prompts": "prompts.jsonl",
    "too_long": 0,
    "overall": {"n": 4, "a_wins": 2, "b_wins": 1, "ties": 1, "win_rate": 0.625, "ci95": [0.25, 1]},
    "categories": {},
    "mean_length": {"a": 12.0, "b": 9.5},
    "identical": 0,
    "position": None,
}


def _edits(result: dict) -> list[tuple[str, str, object]]:
    """(file, what is wrong, the edited object): one field of each class per case."""
    m = next(iter(result["methods"]))

    def edit(path: list, value: object, base: dict) -> dict:
        d = json.loads(json.dumps(base))
        at = d
        for k in path[:-1]:
            at = at[k]
        if value is KeyError:
            del at[path[-1]]
        else:
            at[path[-1]] = value
        return d

    return [
        ("eval.json", "demos.count", edit(["demos", "count"], "8", result)),
        ("eval.json", "methods", edit(["methods"], [], result)),
        ("eval.json", "accuracy", edit(["methods", m, "accuracy"], None, result)),
        ("eval.json", "ci95", edit(["methods", m, "ci95"], [0.1], result)),
        ("eval.json", "title", edit(["methods", m, "title"], KeyError, result)),
        ("eval.json", "correct", edit(["methods", m, "correct"], -1, result)),
        ("eval.json", "diagnosis", edit(["search", "diagnosis"], {"luck": 1}, result)),
        ("eval.json", "object", [result]),
        ("compare.json", "overall.win_rate", edit(["overall", "win_rate"], "high", COMPARE)),
        ("compare.json", "ci95", edit(["overall", "ci95"], [0, 1, 2], COMPARE)),
        ("compare.json", "judge.path", edit(["judge", "path"], KeyError, COMPARE)),
        ("compare.json", "categories", edit(["categories"], {"x": {"n": 1}}, COMPARE)),
    ]


@pytest.mark.slow
def test_edited_eval_and_compare_results_are_refused_in_one_line(run, tmp_path, capsys):
    """Every field the report reads from eval.json and compare.json is checked: an edited file
    is one line naming the file and the field, and no page is written."""
    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    result = json.loads((folder / "eval.json").read_text())
    files.write_json(folder / "compare.json", COMPARE)
    assert main(["report", str(folder), "--out", str(tmp_path / "ok.html")]) == 0
    assert "policy-a" in (tmp_path / "ok.html").read_text()
    capsys.readouterr()
    for name, field, edited in _edits(result):
        files.write_json(folder / "eval.json", result)
        files.write_json(folder / "compare.json", COMPARE)
        files.write_json(folder / name, edited)
        out = tmp_path / f"{name}-{field}.html"
        assert main(["report", str(folder), "--out", str(out)]) != 0, (name, field)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err and field in err, err
        assert "Traceback" not in err and not out.exists()
