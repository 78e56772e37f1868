"""Many-shot evaluation: statistics on synthetic data, the whole protocol with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icm import files
from icm.cli import main
from icm.errors import IcmError
from icm.eval import EvalConfig, auc, bootstrap_interval, evaluate, split_groups
from icm.eval.icl import choose_demos, pgr
from icm.run import Run
from icm.tasks import get_task

from .conftest import shared

TQA = "truthfulqa/train.json"


# -- statistics -----------------------------------------------------------------------------------
def _correctness(groups: int, seed: int, p: float = 0.7) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.random(4 * groups) < p, [k // 4 for k in range(4 * groups)]


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_data():
    widths = []
    for groups in (25, 100, 400):
        correct, ids = _correctness(groups, seed=groups)
        lo, hi = bootstrap_interval(correct, ids, resamples=2000, seed=0)
        assert lo <= correct.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # The width of a proportion's interval falls like 1/sqrt(n): 16x the data, about 1/4 the width.
    assert 2.5 < widths[0] / widths[2] < 6.5
    assert bootstrap_interval(*_correctness(50, 1), seed=3) == bootstrap_interval(
        *_correctness(50, 1), seed=3
    )


def test_bootstrap_resamples_whole_groups():
    # Claims of one question right or wrong together: resampling claims one by one would
    # pretend there are 4x more independent observations and give a narrower interval.
    rng = np.random.default_rng(0)
    per_group = rng.random(60) < 0.6
    correct = np.repeat(per_group, 4)
    grouped = bootstrap_interval(correct, [k // 4 for k in range(240)], seed=0)
    single = bootstrap_interval(correct, list(range(240)), seed=0)
    assert (grouped[1] - grouped[0]) > 1.5 * (single[1] - single[0])


def test_pgr_is_the_share_of_the_gap_to_gold_recovered():
    assert pgr(0.8, 0.5, 0.9) == pytest.approx(0.75)
    assert pgr(0.5, 0.5, 0.9) == 0.0 and pgr(0.9, 0.5, 0.9) == 1.0
    assert pgr(0.4, 0.5, 0.9) == pytest.approx(-0.25)  # worse than zero-shot
    assert pgr(0.7, 0.6, 0.6) is None  # gold no better than zero-shot: undefined
    assert pgr(0.5, 0.56, 0.5) is None


def test_bootstrapped_few_shot_recovers_a_planted_labelling_and_obeys_the_rule():
    """Each claim leans to its planted label, more so the more demonstrations carry theirs;
    pairs (2k, 2k+1) are comparisons of which exactly one is True."""
    from icm.core.baselines import bootstrapped_fewshot
    from icm.core.consistency import Structure, constraints
    from icm.core.data import Example

    from .standin import PlantedModel

    prompts = [f"claim {i}" for i in range(12)]
    planted = {p: int(i % 2 == 0) for i, p in enumerate(prompts)}
    model = PlantedModel(planted, weight=0.3, bias=0.5)
    pair = [("a", "b"), ("b", "a")]
    examples = [Example(str(i), p, i // 2, pair[i % 2]) for i, p in enumerate(prompts)]
    structure = Structure(constraints("asymmetry", examples), len(examples))
    boot = bootstrapped_fewshot(model, prompts, structure, rounds=3)
    labels = boot.labels
    assert labels == [planted[p] for p in prompts]
    assert boot.outcome == "converged" and "converged after" in boot.text()
    assert all(labels[2 * k] + labels[2 * k + 1] == 1 for k in range(6))


def test_auc():
    assert auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert auc([2, 0, 1], [1, 0, 0]) == 1.0
    assert auc([1, 2], [1, 1]) is None


def test_split_by_group_is_deterministic_and_keeps_groups_whole():
    rows = [
        {"question": f"q{g}", "choice": f"a{k}", "label": k % 2, "consistency_id": g}
        for g in range(40)
        for k in range(3)
    ]
    data = get_task("truthfulqa").build(rows)
    train, test = split_groups(data, 0.25, seed=7)
    assert sorted(train + test) == list(range(len(rows)))
    g_train = {rows[i]["consistency_id"] for i in train}
    g_test = {rows[i]["consistency_id"] for i in test}
    assert not g_train & g_test and len(g_test) == 10
    assert split_groups(data, 0.25, seed=7) == (train, test)
    assert split_groups(data, 0.25, seed=8) != (train, test)


# -- the protocol with the real model -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(truthfulqa_run) -> Run:
    """ICM on the first 8 TruthfulQA claims (2 questions), shared by the session."""
    return truthfulqa_run


@pytest.fixture(scope="module")
def test_file(tmp_path_factory) -> Path:
    """Six claims of two later questions, written as a separate test file."""
    rows = json.loads(shared(TQA).read_text())
    ids = sorted({r["consistency_id"] for r in rows})[100:102]
    path = tmp_path_factory.mktemp("test") / "test.json"
    path.write_text(json.dumps([r for r in rows if r["consistency_id"] in ids][:6]))
    return path


@pytest.mark.slow
def test_eval_scores_every_method_on_the_same_demonstrations(tiny_run, test_file, default_model):
    result = evaluate(tiny_run.path, EvalConfig(test=str(test_file), max_demos=6), default_model)
    labels = files.read_jsonl(tiny_run.path / "labels.jsonl")
    gold = [json.loads(test_file.read_text())[k]["label"] for k in range(6)]
    assert list(result["methods"]) == [
        "zero-shot",
        "zs-consistency",
        "random",
        "bootstrap",
        "gold",
        "icm",
    ]
    assert result["test_claims"] == 6 and result["demos"]["count"] == 6
    methods = result["methods"]
    summary = json.loads((tiny_run.path / "summary.json").read_text())
    assert methods["icm"]["label_cost"]["model_calls"] == summary["model_calls"] > 0
    assert methods["gold"]["label_cost"] == {"model_calls": 0, "tokens": 0}
    assert methods["bootstrap"]["label_cost"]["model_calls"] > 0
    # zero-shot + consistency: one zero-shot query per demonstration; TruthfulQA has no rule,
    # so its labels are the zero-shot argmax and there is no joint decoding
    assert methods["zs-consistency"]["label_cost"]["model_calls"] == 6
    assert all("joint" not in m for m in methods.values())
    assert all(m["eval_cost"]["tokens"] > 0 for m in methods.values())
    if methods["gold"]["accuracy"] != methods["zero-shot"]["accuracy"]:
        assert methods["gold"]["pgr"] == 1.0 and methods["zero-shot"]["pgr"] == 0.0
    for name, m in result["methods"].items():
        assert m["n"] == 6
        lo, hi = m["ci95"]
        assert lo <= m["accuracy"] <= hi
        # The accuracy is the argmax label against gold, as the stored log-odds say.
        preds = [p[name] > 0 for p in result["predictions"]]
        assert m["correct"] == sum(int(y) == g for y, g in zip(preds, gold, strict=True))
        assert m["predicted_true"] == sum(preds)
    shown = [labels[int(u)] for u in result["demos"]["uids"]]
    assert result["methods"]["zero-shot"]["demos"] == 0
    assert result["methods"]["gold"]["demo_agreement"] == 1.0
    assert result["methods"]["gold"]["demo_true"] == sum(r["label"] for r in shown)
    assert result["methods"]["icm"]["demo_true"] == sum(r["icm_label"] for r in shown)
    assert result["methods"]["random"]["demo_true"] == 3  # balanced
    icm_vs_gold = np.mean([r["icm_label"] == bool(r["label"]) for r in shown])
    assert result["icm_agreement"]["demos"] == pytest.approx(icm_vs_gold)
    # Different demonstration labels give different predictions: the labels reach the model.
    lo = {m: [p[m] for p in result["predictions"]] for m in ("random", "gold", "icm")}
    assert lo["random"] != lo["gold"] or lo["gold"] != lo["icm"]


@pytest.mark.slow
def test_demonstrations_fill_the_token_budget(tiny_run, test_file, default_model):
    task = get_task("truthfulqa")
    prompts = [ex.prompt for ex in task.load(tiny_run.cfg.data).first_groups(8).examples]
    longest = max(default_model.count_tokens([ex.prompt for ex in task.load(test_file).examples]))

    def pick(budget: int | None) -> tuple[list[int], int]:
        return choose_demos(prompts, default_model, task, budget, None, longest, seed=0)

    (small, t_small), (large, t_large) = pick(260), pick(420)
    full, _ = pick(default_model.max_context)
    assert 1 <= len(small) < len(large) <= len(full) == 8
    assert large[: len(small)] == small  # one seeded order, cut where the budget ends

    def cost(i: int) -> int:
        return default_model.count_tokens([prompts[i] + " False\n\n"])[0]

    assert t_small == sum(cost(i) for i in small)
    assert t_small + longest + 1 <= 260 < t_small + cost(large[len(small)]) + longest + 1
    assert t_large + longest + 1 <= 420


@pytest.mark.slow
def test_split_mode_never_shows_a_test_question(tiny_run, default_model):
    cfg = EvalConfig(split_test=0.5, split_seed=1, limit=8, max_demos=8)
    # The run labelled the file's first two questions; hold out half the file's questions.
    result = evaluate(tiny_run.path, cfg, default_model)
    rows = json.loads(shared(TQA).read_text())
    labels = files.read_jsonl(tiny_run.path / "labels.jsonl")
    test_groups = {rows[int(p["uid"])]["consistency_id"] for p in result["predictions"]}
    demo_groups = {labels[int(u)]["consistency_id"] for u in result["demos"]["uids"]}
    assert not test_groups & demo_groups
    held = {rows[i]["consistency_id"] for i in range(8)} & test_groups
    assert result["demos"]["dropped_overlap"] == 4 * len(held)


@pytest.mark.slow
def test_testing_on_the_runs_own_claims_is_one_line(tiny_run, default_model):
    """Every demonstration would reveal a test claim: said so, not as a token budget."""
    labels = files.read_jsonl(tiny_run.path / "labels.jsonl")
    cfg = EvalConfig(test=str(tiny_run.path / "labels.jsonl"), max_demos=8)
    with pytest.raises(IcmError, match=f"each of the run's {len(labels)} claims is a test claim"):
        evaluate(tiny_run.path, cfg, default_model)


@pytest.mark.slow
def test_cli_eval_writes_json_markdown_and_chart(tiny_run, test_file, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["eval", "--run", str(tiny_run.path), "--test", str(test_file)]
    assert main([*argv, "--limit", "3", "--max-demos", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())
    assert "| ICM |" in printed and "| gold labels |" in printed
    md = (out / "eval.md").read_text()
    for m in result["methods"].values():
        assert f"| {m['title']} | {100 * m['accuracy']:.1f} |" in md
    import matplotlib.image

    img = matplotlib.image.imread(out / "eval.png")
    assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0.05

    # Bad input: one line naming file, row and field; exit 2; the previous outputs intact.
    before = (out / "eval.json").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"question": "q", "choice": "c", "label": 1, "consistency_id": 0},
                {"question": "q", "label": 0, "consistency_id": 0},
            ]
        )
    )
    assert main([*argv[:3], "--test", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icm: ") and str(bad) in err and "row 2" in err and "'choice'" in err
    assert "\n" not in err
    assert (out / "eval.json").read_bytes() == before
    assert main(["eval", "--run", str(tiny_run.path), "--out", str(out)]) == 2
    assert "--test" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--test", str(test_file)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_bootstrapped_few_shot_says_when_it_cycles():
    """A model that predicts the opposite of every demonstration's label flips all labels each
    round: the labels cycle between two labellings and never converge."""
    from icm.core.baselines import bootstrapped_fewshot
    from icm.core.consistency import Structure
    from icm.core.model import LabelModel

    class Contrary(LabelModel):
        def loo_logprobs(self, prompts, labels):
            return np.array([[0.0, -3.0] if y == 1 else [-3.0, 0.0] for y in labels])

        def query_logprobs(self, demos, labels, queries):
            return np.array([[-3.0, 0.0] if k % 2 else [0.0, -3.0] for k in range(len(queries))])

    boot = bootstrapped_fewshot(Contrary(), [f"c{i}" for i in range(6)], Structure([], 6), 5)
    assert boot.outcome == "cycle" and boot.period == 2 and boot.rounds == 2
    assert "cycles between 2 labellings" in boot.text()
    still = bootstrapped_fewshot(Contrary(), [f"c{i}" for i in range(6)], Structure([], 6), 1)
    assert still.outcome == "stopped" and still.labels == [1, 0, 1, 0, 1, 0]
