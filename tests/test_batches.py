"""Data sets larger than one context: batches of whole groups, searched apart, merged whole."""

import json
from types import SimpleNamespace

import pytest

from icm.errors import ConfigError
from icm.run import Run, load_data, split
from icm.run.config import RunConfig

from .standin import PlantedModel


def rows(n_groups: int, sizes=(4, 3, 2, 1)) -> list[dict]:
    out = []
    for g in range(n_groups):
        for k in range(sizes[g % len(sizes)]):
            out.append(
                {
                    "question": f"q{g}",
                    "choice": f"answer {k} of {g}",
                    "label": k % 2 == 0,
                    "consistency_id": g,
                }
            )
    return out


def test_batches_keep_groups_whole_and_lose_no_row(tmp_path):
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(rows(30)))
    _, data = load_data(RunConfig(task="truthfulqa", data=str(path)))
    model = SimpleNamespace(
        count_tokens=lambda texts: [len(t.split()) for t in texts], max_context=None
    )
    for size, budget in [(8, None), (5, None), (100, 60), (7, 64)]:
        cfg = RunConfig(task="truthfulqa", data=str(path), batch_size=size, context_tokens=budget)
        parts = split(data, cfg, model)
        assert sorted(i for p in parts for i in p) == list(range(len(data)))
        for p in parts:
            assert p == sorted(p)  # file order
            groups = {data.examples[i].group for i in p}
            whole = [i for i, ex in enumerate(data.examples) if ex.group in groups]
            assert whole == p  # every group whole, in one batch
            group_rows = max(len([i for i in p if data.examples[i].group == g]) for g in groups)
            assert len(p) <= max(size, group_rows)
            if budget:
                cost = sum(len(data.examples[i].prompt.split()) + 3 for i in p)
                longest = max(len(ex.prompt.split()) + 3 for ex in data.examples)
                assert cost <= budget - longest or len(groups) == 1
        assert len(parts) > 1
    # a budget below one group's prompts (4 claims of 15 tokens): refused, naming the rows
    with pytest.raises(ConfigError, match="--context-tokens .40 tokens. cannot hold one group"):
        split(data, RunConfig(task="truthfulqa", data=str(path), context_tokens=40), model)


def test_batched_run_merges_every_row_in_input_order(tmp_path):
    path = tmp_path / "claims.json"
    source = rows(12)
    path.write_text(json.dumps(source))
    cfg = RunConfig(task="truthfulqa", data=str(path), batch_size=10, iterations=15, seed=1)
    _, data = load_data(cfg)
    planted = {ex.prompt: int(g) for ex, g in zip(data.examples, data.gold, strict=True)}
    summary = Run.create(cfg, tmp_path / "run").execute(model=PlantedModel(planted))
    out = tmp_path / "run"
    labelled = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in source[0]} for r in labelled] == source
    assert summary["batches"] == len(list((out / "batches").iterdir())) > 1
    assert summary["examples"] == len(source)
    assert sum(s["examples"] for s in summary["per_batch"]) == len(source)
    plan = json.loads((out / "plan.json").read_text())
    for k, r in enumerate(labelled):  # each row was searched in the batch the plan gave it
        assert k in plan["batches"][r["icm_batch"]]
