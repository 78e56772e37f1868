"""The search logic under a deterministic stand-in scorer (real-model tests live elsewhere)."""

import numpy as np
import pytest

from icm.core.data import Example
from icm.core.model import LabelModel
from icm.core.search import Search, SearchConfig, temperature

from .standin import PlantedModel


def planted_set(n: int = 24, seed: int = 1):
    """n claims in groups of 4 with GSM8K-like final answers; the planted labelling is consistent:
    within a group, the claims with answer "right" are True, the rest False."""
    rng = np.random.default_rng(seed)
    examples, planted = [], {}
    for i in range(n):
        g = i // 4
        right = bool(rng.integers(2))
        key = "right" if right else f"wrong{rng.integers(3)}"
        ex = Example(str(i), f"claim {i}", g, key)
        examples.append(ex)
        planted[ex.prompt] = int(right)
    return examples, planted


def test_standin_implements_the_interface():
    assert isinstance(PlantedModel({}), LabelModel)


@pytest.mark.parametrize(
    "rule,score",
    [("same-answer", "sum-logprob"), ("same-answer", "mean-logodds"), ("none", "mean-logodds")],
)
def test_search_recovers_planted_labelling(rule, score):
    examples, planted = planted_set()
    search = Search(examples, PlantedModel(planted), rule, SearchConfig.paper(score=score))
    state = search.start(seed=0)
    list(search.run(state, 120))
    final = search.final_terms(state.labels).argmax(1)
    truth = [planted[e.prompt] for e in examples]
    assert list(final) == truth
    searched = [(y, t) for y, t in zip(state.labels, truth, strict=True) if y >= 0]
    assert all(y == t for y, t in searched)
    assert sum(y >= 0 for y in state.labels) >= len(examples) // 2
    assert state.inconsistencies == 0


def test_same_seed_same_trace_different_seed_differs():
    examples, planted = planted_set()

    def trace(seed):
        search = Search(examples, PlantedModel(planted), "same-answer")
        state = search.start(seed)
        return [s.__dict__ for s in search.run(state, 40)]

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_consistency_fix_never_lowers_utility():
    """With one seed, M fix rounds are a prefix of M+1 rounds: U must not fall from one to the next,
    and every round that changed the labels raised U."""
    examples, planted = planted_set()
    rng = np.random.default_rng(7)
    for trial in range(20):
        labels = [int(v) for v in rng.integers(-1, 2, size=len(examples))]
        previous_u, previous_labels = None, None
        for m in range(0, 6):
            search = Search(
                examples, PlantedModel(planted), "same-answer", SearchConfig.paper(fix_steps=m)
            )
            search.rng = np.random.default_rng(trial)
            fixed, ev, fixes = search.consistency_fix(list(labels))
            assert ev.utility == pytest.approx(search.evaluate(fixed).utility)
            if previous_u is not None:
                assert ev.utility >= previous_u
                if fixed != previous_labels:
                    assert ev.utility > previous_u
            previous_u, previous_labels = ev.utility, fixed
        assert fixes <= 5


def test_consistency_fix_tries_every_consistent_assignment():
    # Two claims with different answers, both True: the fix may pick (0, 0), (0, 1) or (1, 0).
    # The planted labelling says claim 1 is True and claim 0 False, which only (0, 1) gives.
    examples = [Example("0", "a", "g", "x"), Example("1", "b", "g", "y")]
    examples += [Example(str(i), f"c{i}", f"h{i}", None) for i in range(2, 6)]
    planted = {"a": 0, "b": 1, "c2": 1, "c3": 0, "c4": 1, "c5": 0}
    search = Search(examples, PlantedModel(planted), "same-answer")
    search.rng = np.random.default_rng(0)
    fixed, ev, fixes = search.consistency_fix([1, 1, 1, 0, 1, 0])
    assert fixed[:2] == [0, 1] and fixes == 1 and ev.inconsistencies == 0


def test_memo_avoids_rescoring_the_same_labelling():
    examples, planted = planted_set(8)
    model = PlantedModel(planted)
    search = Search(examples, model, "none")
    labels = [1, 0, -1, 1, -1, 0, 1, 1]
    a = search.evaluate(labels)
    calls = model.calls
    b = search.evaluate(list(labels))
    assert model.calls == calls and a is b


def test_temperature_schedule():
    cfg = SearchConfig()
    assert temperature(1, cfg) == pytest.approx(10.0)
    assert temperature(100, cfg) == pytest.approx(10 / (1 + 0.99 * np.log(100)))
    assert temperature(10**300, SearchConfig(tmin=0.5)) == 0.5


def test_initial_labels_are_balanced_and_random():
    examples, planted = planted_set(40)
    for seed in range(5):
        state = Search(
            examples, PlantedModel(planted), "none", SearchConfig.paper(fix_steps=0)
        ).start(seed)
        labelled = [y for y in state.labels if y >= 0]
        assert len(labelled) == 8 and sum(labelled) == 4


def test_sampling_prefers_unlabelled_members_of_touched_groups():
    examples, planted = planted_set(40)
    search = Search(examples, PlantedModel(planted), "none")
    search.rng = np.random.default_rng(0)
    labels = [-1] * 40
    labels[0] = 1  # group 0 = examples 0..3
    picks = [search.sample(labels) for _ in range(2000)]
    share = np.mean([p in (1, 2, 3) for p in picks])
    # weights: 3 x 100 vs 37 x 1 -> 300 / 337
    assert share == pytest.approx(300 / 337, abs=0.03)


def test_paper_preset_is_the_papers_objective_and_constants():
    cfg = SearchConfig.paper()
    assert (cfg.score, cfg.alpha, cfg.t0, cfg.tmin, cfg.beta) == ("sum-logprob", 50, 10, 0.01, 0.99)
    assert (cfg.initial, cfg.fix_steps, cfg.group_weight, cfg.clock) == (8, 10, 100, "iteration")
    assert (cfg.init, cfg.moves, cfg.keep_best, cfg.polish) == ("random", "fix", False, False)
    assert cfg.per_example == 1 and not cfg.fix_first  # n = 1..N, as Algorithm 1 states


def test_official_preset_is_the_released_codes_configuration():
    cfg = SearchConfig.official()
    assert (cfg.score, cfg.alpha, cfg.clock, cfg.fix_first) == (
        "mean-logodds",
        30,
        "accepted",
        True,
    )
    assert cfg.per_example * 256 == 3000
    # T = T0 / (1 + 2 log(1 + accepted flips)): the clock is accepted + 1
    for flips in (0, 1, 5, 40):
        assert temperature(flips + 1, cfg) == pytest.approx(10 / (1 + 2 * np.log(1 + flips)))


def test_differences_name_only_what_a_preset_changes():
    assert SearchConfig().differences() == {}
    assert SearchConfig.paper(alpha=20.0).differences()["alpha"] == 20.0
    assert "alpha" not in SearchConfig.paper(alpha=5.0).differences()
    assert set(SearchConfig.official().differences()) >= {"alpha", "beta", "clock", "fix_first"}


def test_first_fix_of_a_proposal_is_applied_even_when_it_lowers_u():
    """Two claims with different answers, both True; the planted labelling wants both True so
    every repair lowers U. ConsistencyFix keeps them; with `first_always` the best repair wins."""
    examples = [Example("0", "a", "g", "x"), Example("1", "b", "g", "y")]
    examples += [Example(str(i), f"c{i}", f"h{i}", None) for i in range(2, 6)]
    planted = {"a": 1, "b": 1, "c2": 1, "c3": 0, "c4": 1, "c5": 0}
    search = Search(examples, PlantedModel(planted, bias=6.0), "same-answer")
    search.rng = np.random.default_rng(0)
    start = [1, 1, 1, 0, 1, 0]
    kept, ev, fixes = search.consistency_fix(list(start))
    assert kept == start and fixes == 0 and ev.inconsistencies == 1
    fixed, ev2, fixes2 = search.consistency_fix(list(start), first_always=True)
    assert fixes2 >= 1 and ev2.inconsistencies == 0 and ev2.utility < ev.utility
    assert fixed[:2] in ([0, 1], [1, 0], [0, 0])
