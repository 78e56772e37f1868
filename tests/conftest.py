"""Shared fixtures: the data sets beside the project, and the real default model (loaded once).

Test tiers (see CONTRIBUTING.md): `pytest -m "not slow"` is the fast tier, the model-free tests
and one real-model smoke test; plain `pytest` runs everything. A test that uses one of the
fixtures in SLOW_FIXTURES is marked slow here; a test that loads a model, starts a server or
trains in its own body says `@pytest.mark.slow` itself. Under pytest-xdist (`-n`), the tests of
one module run on one worker (their module fixtures are built once), and so do the tests that
share the session's reward model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("ICM_SHARED_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


def shared(rel: str) -> Path:
    """A file under ../shared/data, or skip the test when the data sets are absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data sets are not beside this checkout")
    return path


def custom_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config points at its own Python code, which writes `marker` when
    it runs (and then fails to load: it defines no model)."""
    from icm.backends.loading import resolve

    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(resolve("default")) / name, folder / name)
    auto = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    auto["AutoModelForSequenceClassification"] = "custom.Model"
    (folder / "config.json").write_text(json.dumps({"model_type": "custom", "auto_map": auto}))
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder


SLOW_FIXTURES = {
    "default_model",
    "default_model_converted",
    "tiny_reward_model",
    "truthfulqa_run",
}
"""Fixtures that load or train a real model: a test using one is in the slow tier."""
SHARED_GROUPS = {"tiny_reward_model": "reward-model", "truthfulqa_run": "truthfulqa-run"}
"""Session fixtures whose users run on one xdist worker, so each is built once."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """The slow mark from the fixtures a test uses; the xdist group from its module, or from
    the shared session fixture it uses."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if not any(item.iter_markers("xdist_group")):
            shared_by = sorted(SHARED_GROUPS[n] for n in names & set(SHARED_GROUPS))
            group = shared_by[0] if shared_by else item.path.stem
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionstart(session) -> None:
    """Under xdist, convert the embedded model once in the controller before the workers start
    (each would otherwise convert its own copy at the same time)."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if config.option.collectonly:
        return
    from icm.backends.loading import resolve

    with contextlib.suppress(Exception):  # the tests that need the model say what is wrong
        resolve("default")


@pytest.fixture(scope="session")
def default_model_converted() -> str:
    """The cached conversion of the embedded default model, made here if it is missing."""
    from icm.backends.loading import resolve

    return resolve("default")


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M through transformers (converted from GGUF once, then cached)."""
    import torch

    from icm.backends.transformers import TransformersModel

    torch.set_num_threads(1)
    return TransformersModel.load("default", scorer="dc")


@pytest.fixture(scope="session")
def truthfulqa_run(tmp_path_factory, default_model):
    """ICM on the first 8 TruthfulQA claims (2 questions): the paper's search with the mean
    log-odds score, 4 iterations. One real run that the eval, report and fine-tuning tests read;
    a test that writes into a run copies it first."""
    from icm.core.search import SearchConfig
    from icm.run import Run
    from icm.run.config import RunConfig

    cfg = RunConfig(
        task="truthfulqa",
        data=str(shared("truthfulqa/train.json")),
        limit=8,
        iterations=4,
        threads=1,
        search=SearchConfig.paper(score="mean-logodds"),
    )
    run = Run.create(cfg, tmp_path_factory.mktemp("truthfulqa") / "run")
    run.execute(default_model)
    return run


# Comparisons made up for the RL tests: a sensible answer and a useless one to each query, in
# both orders (the alpaca task's layout), with a category.
PAIRS = [
    ("What is 2 + 2?", "2 + 2 is 4.", "Bananas are yellow.", "helpfulness"),
    ("Name a colour.", "Blue is a colour.", "I do not know words.", "helpfulness"),
    ("How many days are in a week?", "A week has seven days.", "Cats sleep a lot.", "helpfulness"),
    ("What is the capital of France?", "Paris.", "The sea is wet and cold.", "helpfulness"),
    (
        "How do I hurt my neighbour?",
        "I will not help with that.",
        "Use a big stick.",
        "harmlessness",
    ),
    (
        "How can I steal a car?",
        "I cannot help with theft.",
        "Break the window first.",
        "harmlessness",
    ),
]


def comparison_rows() -> list[dict]:
    """Both orders of every pair; `label` (gold) true when `choice` is the sensible answer."""
    rows = []
    for k, (q, good, bad, kind) in enumerate(PAIRS):
        for first, second, y in ((good, bad, True), (bad, good, False)):
            rows.append(
                {
                    "question": q,
                    "choice": first,
                    "choice_2": second,
                    "label": y,
                    "consistency_id": k,
                    "hh_type": kind,
                }
            )
    return rows


@pytest.fixture(scope="session")
def comparison_run(tmp_path_factory) -> Path:
    """A finished-looking ICM run of the alpaca task over `comparison_rows` (labels = gold)."""
    from icm import files
    from icm.run.config import RunConfig
    from icm.run.folder import RunFolder

    folder = tmp_path_factory.mktemp("cmp") / "run"
    folder.mkdir()
    RunFolder(folder).mark()
    files.write_json(folder / "config.json", RunConfig(task="alpaca", data="").to_json())
    rows = comparison_rows()
    files.write_jsonl(
        folder / "labels.jsonl",
        (
            {**r, "icm_label": r["label"], "icm_confidence": 0.6 + 0.05 * (k % 4)}
            for k, r in enumerate(rows)
        ),
    )
    return folder


@pytest.fixture(scope="session")
def tiny_reward_model(comparison_run, default_model_converted) -> Path:
    """A reward model trained a few steps on `comparison_run` (shared by the RL tests)."""
    import torch

    from icm.cli import main

    torch.set_num_threads(1)
    out = comparison_run.parent / "rm"
    argv = ["finetune", str(comparison_run), "--reward-model", "--out", str(out)]
    assert (
        main([*argv, "--max-steps", "3", "--batch-size", "6", "--lr", "1e-3", "--threads", "1"])
        == 0
    )
    return out


def events(logdir: Path) -> dict[str, list[float]]:
    """Every scalar curve of the TensorBoard event files in `logdir`, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
