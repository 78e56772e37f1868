"""Consistent moves, exact decoding, the end of a search (complete, repair, polish) and the
concept test, under the deterministic stand-in scorers."""

import itertools
from statistics import NormalDist

import numpy as np
import pytest

from icm.core.concept import (
    ALPHA,
    combine_tests,
    concept_test,
    null_labelling,
    nulls_for,
    predict,
    t_quantile,
    t_sf,
)
from icm.core.consistency import Structure, constraints, violations
from icm.core.data import Example
from icm.core.local import settle
from icm.core.search import Search, SearchConfig

from .standin import NoiseModel, PlantedModel
from .test_search import planted_set

CONSISTENT = SearchConfig(init="zero-shot", moves="consistent", keep_best=True, polish=True)


def ex(i, group, key):
    return Example(str(i), f"p{i}", group, key)


def gsm_like():
    # q1: answers 18, 18, 26, 26; q2: 5, 7; a claim with no group
    exs = [ex(0, "q1", "18"), ex(1, "q1", "18"), ex(2, "q1", "26"), ex(3, "q1", "26")]
    return [*exs, ex(4, "q2", "5"), ex(5, "q2", "7"), ex(6, None, None)]


def test_a_move_changes_what_the_rule_forces_and_nothing_else():
    s = Structure(constraints("same-answer", gsm_like()), 7)
    assert s.components == [[0, 1, 2, 3], [4, 5], [6]]
    assert s.move([0, 0, 0, 0, 0, 0, 0], 0, 1) == [1, 1, 0, 0, 0, 0, 0]
    assert s.move([1, 1, 0, 0, 0, 0, 1], 2, 1) == [0, 0, 1, 1, 0, 0, 1]
    assert s.move([1, 1, 0, 0, 0, 1, 0], 0, 0) == [0, 0, 0, 0, 0, 1, 0]
    assert s.move([0] * 7, 6, 1) == [0, 0, 0, 0, 0, 0, 1]
    # a person's label is never changed: a move that would change it is refused
    fixed = Structure(constraints("same-answer", gsm_like()), 7, fixed={2: 1})
    assert fixed.move([0, 0, 1, 1, 0, 0, 0], 0, 1) is None


def test_asymmetric_pairs_move_together():
    pairs = [ex(i, i // 2, ("a", "b") if i % 2 == 0 else ("b", "a")) for i in range(6)]
    s = Structure(constraints("asymmetry", pairs), 6)
    assert s.move([1, 0, 1, 0, 1, 0], 2, 0) == [1, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("rule", ["same-answer", "asymmetry", "equivalence", "none"])
def test_decode_is_the_best_consistent_labelling(rule):
    rng = np.random.default_rng(0)
    for _ in range(20):
        exs = [
            ex(i, i // 4, (str(rng.integers(2)), str(rng.integers(2))))
            if rule == "asymmetry"
            else ex(i, i // 4, str(rng.integers(3)))
            for i in range(8)
        ]
        cons = constraints(rule, exs)
        margin = rng.normal(size=8)
        got = Structure(cons, 8).decode(margin)
        best = max(
            (list(a) for a in itertools.product([0, 1], repeat=8) if not violations(cons, a)),
            key=lambda a: sum((2 * v - 1) * m for v, m in zip(a, margin, strict=True)),
        )
        assert not violations(cons, got)
        assert got == best


def test_decode_keeps_fixed_and_kept_labels():
    s = Structure(constraints("same-answer", gsm_like()), 7, fixed={0: 1})
    got = s.decode([-5, -5, 5, 5, 1, 2, -1], keep=[-1, -1, -1, -1, 0, -1, -1])
    assert got[0] == 1 and got[1] == 1 and got[2:4] == [0, 0]  # forced by the fixed label
    assert got[4] == 0 and got[5] == 1  # kept, and its partner decided given it


def corrupted(examples, planted, seed=0):
    """The planted labelling with a third of the groups decided wrongly (still consistent)."""
    truth = [planted[e.prompt] for e in examples]
    rng = np.random.default_rng(seed)
    margin = [(2 * t - 1) * (1 if rng.random() > 0.33 else -1) for t in truth]
    s = Structure(constraints("same-answer", examples), len(examples))
    return truth, s.decode(margin)


def test_polish_reaches_the_planted_labelling_from_a_poor_start():
    examples, planted = planted_set()
    search = Search(examples, PlantedModel(planted), "same-answer", CONSISTENT)
    truth, start = corrupted(examples, planted)
    assert start != truth
    state = search.start(seed=0, labels=start)
    changes = list(settle(search, state))
    assert state.labels == truth
    assert state.inconsistencies == 0 and state.polish_moves == -1
    assert [c.kind for c in changes].count("move") > 0
    assert state.best_utility == pytest.approx(state.utility)


def test_every_state_obeys_the_rule_with_consistent_moves():
    examples, planted = planted_set()
    search = Search(examples, PlantedModel(planted), "same-answer", CONSISTENT)
    state = search.start(seed=3, labels=[0] * len(examples))
    for step in search.run(state, 60):
        assert step.inconsistencies == 0 and not violations(search.cons, state.labels)


def test_the_paper_search_ends_consistent_after_settling():
    examples, planted = planted_set()
    cfg = SearchConfig(keep_best=True, polish=True)
    search = Search(examples, PlantedModel(planted, weight=0.05, bias=0.3), "same-answer", cfg)
    state = search.start(seed=1)
    list(search.run(state, 20))
    list(settle(search, state))
    assert all(y >= 0 for y in state.labels) and not violations(search.cons, state.labels)


def test_settling_is_resumable_from_any_of_its_checkpoints():
    examples, planted = planted_set()
    model = PlantedModel(planted)
    search = Search(examples, model, "same-answer", CONSISTENT)
    state = search.start(seed=0, labels=corrupted(examples, planted)[1])
    snapshots = []
    for _ in settle(search, state):
        snapshots.append(state.to_json())
    for saved in snapshots:
        again = Search(examples, model, "same-answer", CONSISTENT)
        resumed = type(state).from_json(saved)
        again.resume(resumed)
        list(settle(again, resumed))
        assert resumed.labels == state.labels and resumed.utility == state.utility


def test_null_labellings_obey_the_rule_and_keep_the_count():
    rng = np.random.default_rng(0)
    examples, _ = planted_set(40)
    s = Structure(constraints("same-answer", examples), 40)
    for true in (3, 8, 12):
        labels = null_labelling(s, true, rng)
        assert not violations(s.cons, labels)
        assert abs(sum(labels) - true) <= 2  # a group moves several labels at once
    flat = Structure([], 30)
    assert [sum(null_labelling(flat, k, rng)) for k in (0, 7, 30)] == [0, 7, 30]


def _fresh(search: Search):
    return search.reordered(search.cfg.orders)


def test_concept_test_tells_a_planted_concept_from_noise():
    examples, planted = planted_set(40)
    truth = [planted[e.prompt] for e in examples]
    rng = np.random.default_rng(0)
    held = Search(examples, PlantedModel(planted, weight=0.3, bias=0.0), "same-answer")
    result = concept_test(_fresh(held), held.structure, truth, rng)
    assert result["verdict"] == "holds" and result["p"] < 0.001 and result["holds"] is True
    assert result["samples"] == nulls_for(40) == 16 and "holds" in result["text"]
    flat = Search(examples, NoiseModel(), "same-answer")
    result = concept_test(_fresh(flat), flat.structure, truth, rng)
    assert result["verdict"] in ("no concept", "too small to tell") and result["p"] > 0.05


def test_a_labelling_with_no_concept_passes_at_the_stated_rate():
    """Under a scorer where no labelling is special, a labelling drawn like the nulls gets
    uniform p-values (the t with m - 1 degrees of freedom, not the normal quantile), so it
    passes ALPHA of the time."""
    pair = [("a", "b"), ("b", "a")]
    examples = [Example(str(i), f"claim {i}", i // 2, pair[i % 2]) for i in range(12)]
    search = Search(examples, NoiseModel(), "asymmetry")
    rng = np.random.default_rng(1)
    trials = 400
    tests = []
    for k in range(trials):
        labels = null_labelling(search.structure, 6, rng)
        tests.append(concept_test(search.reordered(k + 1), search.structure, labels, rng))
    p = np.array([t["p"] for t in tests])
    for level, within in ((0.05, 0.03), (0.25, 0.06), (0.5, 0.07)):  # 3.5 sds of the share
        assert abs((p <= level).mean() - level) < within, level
    assert np.mean([t["verdict"] == "holds" for t in tests]) <= ALPHA + 0.015


def test_t_distribution_and_stouffer():
    assert t_quantile(0.95, 7) == pytest.approx(1.894579, abs=1e-5)
    assert t_sf(2.0, 10) == pytest.approx(0.036694, abs=1e-6)
    assert t_sf(-1.0, 5) == pytest.approx(0.818391, abs=1e-6)
    v = predict(5.0, np.array([0.0, 1.0, -1.0, 0.5, -0.5, 0.2, -0.2, 0.0]))
    assert v.verdict == "holds" and v.samples == 8
    small = "too small to tell"
    tests = [{"p": 0.02, "effect": 2.2, "effect_upper": 4.2, "samples": 8, "verdict": small}] * 2
    both = combine_tests(tests)  # neither batch alone, both together
    assert both["p"] == pytest.approx(1 - NormalDist().cdf(2 * NormalDist().inv_cdf(0.98) / 2**0.5))
    assert both["verdict"] == "holds" and both["batch_verdicts"]["too small to tell"] == 2
    weak = [{"p": 0.4, "effect": 0.8, "effect_upper": 2.8, "samples": 8, "verdict": small}] * 4
    none = combine_tests(weak)  # the interval narrows with the batches: below 2.5 sds
    assert none["verdict"] == "no concept" and none["effect_upper"] == pytest.approx(0.8 + 1.0)
    assert combine_tests([{"p": None, "verdict": small}])["verdict"] == small


def test_no_iterations_means_the_zero_shot_start_settled(tmp_path):
    """--iterations 0 with the default search: no annealing step, only the settling moves."""
    from icm import files
    from icm.run import Run

    from .test_trust import setup

    cfg, model = setup(tmp_path, iterations=0)
    summary = Run.create(cfg, tmp_path / "run").execute(model)
    path = tmp_path / "run" / "batches" / "000" / "chain-0" / "trace.jsonl"
    trace = files.read_jsonl(path) if path.exists() else []  # the start may need no move
    assert summary["iterations"] == 0 and summary["searched_share"] == 1.0
    assert all("polish" in row and row["n"] == 0 for row in trace)
    assert summary["agreement"] == 1.0  # the planted labelling, found
