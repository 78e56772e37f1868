"""The call cache any backend can use: a rerun of a seeded search through the local model
computes nothing again and gives the same labels, and the cache is keyed by the model's identity
(a different model is never answered from it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from icm.backends.caching import CachingModel, CallCache, with_cache
from icm.cli import main
from icm.demo import make_demo_rows
from icm.errors import ConfigError

from .standin import PlantedModel


@pytest.mark.slow
def test_a_rerun_through_the_local_model_is_answered_from_the_cache(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_demo_rows(4, seed=3)))
    cache = tmp_path / "calls.sqlite"
    args = ["run", "--task", "demo", "--data", str(data), "--algorithm", "paper"]
    args += ["--iterations", "4", "--seed", "2", "--no-progress", "--call-cache", str(cache)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    again = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert first["model_calls"] > 0 and again["model_calls"] == again["tokens"] == 0
    a, b = (tmp_path / r / "labels.jsonl" for r in "ab")
    assert a.read_bytes() == b.read_bytes()


def planted(seed: int, prompts: list[str]) -> PlantedModel:
    rng = np.random.default_rng(seed)
    model = PlantedModel({p: int(rng.integers(2)) for p in prompts}, bias=0.5 + seed)
    model.identity = {"backend": "planted", "seed": seed}
    return model


def test_another_model_is_not_answered_from_the_cache(tmp_path):
    prompts, labels = ["a", "b", "c"], [1, 0, 1]
    one, other = planted(1, prompts), planted(2, prompts)
    path = tmp_path / "calls.sqlite"
    first = with_cache(one, path)
    assert isinstance(first, CachingModel)
    want = one.loo_logprobs(prompts, labels)
    np.testing.assert_array_equal(first.loo_logprobs(prompts, labels), want)
    np.testing.assert_array_equal(first.loo_logprobs(prompts, labels), want)  # bit for bit
    assert first.cache_hits == 1
    second = CachingModel(other, CallCache(path))
    got = second.loo_logprobs(prompts, labels)
    assert second.cache_hits == 0
    np.testing.assert_array_equal(got, other.loo_logprobs(prompts, labels))
    assert not np.array_equal(got, want)


def test_a_model_that_does_not_say_what_it_is_gets_no_cache(tmp_path):
    model = PlantedModel({"a": 1})
    with pytest.raises(ConfigError, match="identity"):
        with_cache(model, tmp_path / "calls.sqlite")
    assert not (tmp_path / "calls.sqlite").exists()


def test_a_failed_call_is_not_kept(tmp_path):
    class Failing(PlantedModel):
        def query_logprobs(self, demos, labels, queries):
            raise RuntimeError("the model broke")

    model = Failing({"a": 1})
    model.identity = {"backend": "failing"}
    path = tmp_path / "c.sqlite"
    cached = CachingModel(model, CallCache(path))
    with pytest.raises(RuntimeError):
        cached.query_logprobs([], [], ["a"])
    (count,) = CallCache(path).db.execute("SELECT COUNT(*) FROM calls").fetchone()
    assert count == 0
