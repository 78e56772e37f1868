"""`icm finetune`: real LoRA fine-tunes of the default model on ICM labels (few steps, 1 thread).

The run is the session's real one (conftest: `truthfulqa_run`, eight TruthfulQA claims); the
refusals read a finished-looking run made without a model. The SFT test checks that training
raises the log-probability of the ICM labels on the same prompts, and that the merged folder loads
as a model for `icm run`; the reward test checks that the chosen answers gain reward.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icm import files
from icm.backends.transformers import TransformersModel
from icm.cli import main
from icm.export import load_labelled, prompts, records
from icm.tasks import get_task
from icm.train import META

from .conftest import custom_code_model, events, shared
from .test_export import make_run

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def run(truthfulqa_run) -> Path:
    """The session's real run: 8 TruthfulQA claims labelled by ICM (read, never written)."""
    return truthfulqa_run.path


def label_logprobs(model: TransformersModel, run) -> np.ndarray:
    data = load_labelled(run)
    y = np.array(data.labels, dtype=int)
    return model.query_logprobs([], [], prompts(data))[np.arange(len(y)), y]


@pytest.mark.slow
def test_finetune_raises_the_icm_labels_and_loads_as_a_model(run, default_model, tmp_path):
    before = label_logprobs(default_model, run)
    out = tmp_path / "model"
    argv = ["finetune", str(run), "--out", str(out), "--max-steps", "2", "--lr", "1e-3"]
    assert main([*argv, "--threads", "1"]) == 0
    tuned = TransformersModel.load(str(out))  # the folder `icm run --model` takes
    after = label_logprobs(tuned, run)
    assert after.mean() > before.mean() + 0.05, (before, after)
    meta = json.loads((out / META).read_text())
    assert meta["kind"] == "sft" and meta["steps"] == 2 and meta["records"] == 8
    assert not (out / "adapter_config.json").exists()  # merged, not an adapter
    assert not list(tmp_path.glob(".model*"))  # no temporary folder left behind

    # --adapter: the same training saved as a LoRA adapter, folded into its base on loading.
    adapter = tmp_path / "adapter"
    argv[3] = str(adapter)
    assert main([*argv, "--threads", "1", "--adapter", "--report-to", "tensorboard"]) == 0
    assert (adapter / "adapter_model.safetensors").stat().st_size < 20e6
    losses = events(adapter / "tensorboard")["train/loss"]  # the curve, read back
    saved = json.loads((adapter / META).read_text())
    assert len(losses) == 2 and losses[-1] == pytest.approx(saved["loss_last"], rel=1e-6)
    assert not (adapter / "model.safetensors").exists()
    mode = 0o666 & ~files.umask()  # readable by whoever may read new files, weights included
    written = [f for f in [*out.rglob("*"), *adapter.rglob("*")] if f.is_file()]
    assert {f.stat().st_mode & 0o777 for f in written} == {mode}
    np.testing.assert_allclose(
        label_logprobs(TransformersModel.load(str(adapter)), run), after, atol=1e-4
    )

    # `icm eval --model` scores the held-out claims with the tuned model, not the run's.
    rows = json.loads(shared("truthfulqa/train.json").read_text())
    test = tmp_path / "test.json"
    test.write_text(json.dumps(rows[400:404]))
    ev = tmp_path / "eval"
    argv = ["eval", "--run", str(run), "--test", str(test), "--max-demos", "2", "--out", str(ev)]
    assert main([*argv, "--model", str(out), "--threads", "1"]) == 0
    result = json.loads((ev / "eval.json").read_text())
    assert result["model"] == str(out) and result["run_model"] == "default"
    queries = [ex.prompt for ex in get_task("truthfulqa").load(test).examples]
    lp = tuned.query_logprobs([], [], queries)
    zero_shot = [p["zero-shot"] for p in result["predictions"]]
    assert np.allclose(zero_shot, lp[:, 1] - lp[:, 0], atol=1e-3)
    base = default_model.query_logprobs([], [], queries)
    assert not np.allclose(zero_shot, base[:, 1] - base[:, 0], atol=1e-3)


@pytest.fixture
def labelled(tmp_path) -> Path:
    """A finished-looking run of 8 TruthfulQA claims (labels made up, no model involved)."""
    rows = [
        {"question": f"Q{g}?", "choice": f"answer {k}", "label": k % 2 == 0, "consistency_id": g}
        for g in range(2)
        for k in range(4)
    ]
    return make_run(tmp_path / "run", "truthfulqa", rows, [r["label"] for r in rows])


def test_finetune_keeps_an_existing_folder(labelled, tmp_path, capsys):
    run = labelled
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["finetune", str(run), "--out", str(out), "--max-steps", "1"]) == 2
    assert "a folder icm did not write" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", [[], ["--reward-model"]], ids=["sft", "reward"])
@pytest.mark.parametrize("where", ["the model", "a folder holding it"])
def test_the_model_trained_from_is_never_the_output(labelled, kind, where, tmp_path, capsys):
    """Even an earlier icm training, with --overwrite: the base would be replaced by its own
    fine-tune, and an adapter's base would be itself."""
    earlier = tmp_path / "earlier"
    base = earlier / "m" if where == "a folder holding it" else earlier
    base.mkdir(parents=True)
    (earlier / META).write_text("{}")  # a folder icm trained
    (base / "config.json").write_text("{}")
    before = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    argv = ["finetune", str(labelled), *kind, "--model", str(base), "--out", str(earlier)]
    assert main([*argv, "--overwrite"]) == 2
    verb = "is" if base == earlier else "holds"
    assert f"{earlier}: {verb} an input ({base})" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("kind", [[], ["--reward-model"]], ids=["sft", "reward"])
def test_model_code_runs_in_training_only_when_trusted(labelled, kind, tmp_path, capsys):
    run = labelled
    marker = tmp_path / "code-ran"
    model = custom_code_model(tmp_path / "custom", marker)
    argv = ["finetune", str(run), *kind, "--model", str(model), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    assert "--trust-remote-code" in capsys.readouterr().err and not marker.exists()
    assert main([*argv, "--trust-remote-code"]) == 2  # it ran, then defined no model
    assert marker.exists()
    assert not (tmp_path / "m").exists()


def test_no_adapter_on_top_of_an_adapter(run, default_model_converted, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": default_model_converted, "peft_type": "LORA"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    out = tmp_path / "model"
    argv = ["finetune", str(run), "--model", str(adapter), "--adapter", "--out", str(out)]
    assert main(argv) == 2
    assert "itself a LoRA adapter" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_reward_model_learns_the_icm_preferences(tmp_path):
    from icm.train.common import base_model_path
    from icm.train.reward import load_reward, rewards

    torch.set_num_threads(1)
    task_rows = json.loads(shared("truthfulqa/train.json").read_text())[:8]
    labels = [k % 2 == 0 for k in range(8)]  # two True and two False claims per question
    run = make_run(tmp_path / "run", "truthfulqa", task_rows, labels)
    pairs = records(load_labelled(run), "rm")
    assert len(pairs) == 8

    def margins(model, tok) -> torch.Tensor:
        with torch.no_grad():
            chosen = rewards(model, tok, [p["prompt"] + p["chosen"] for p in pairs])
            rejected = rewards(model, tok, [p["prompt"] + p["rejected"] for p in pairs])
        return chosen - rejected

    torch.manual_seed(0)  # the head the trainer starts from (its seed is 0 too)
    tok, base = load_reward(base_model_path(run))
    before = margins(base, tok)
    out = tmp_path / "rm"
    argv = ["finetune", str(run), "--reward-model", "--out", str(out), "--max-steps", "3"]
    assert main([*argv, "--batch-size", "4", "--lr", "1e-3", "--threads", "1"]) == 0
    tok, model = load_reward(str(out))
    after = margins(model, tok)
    assert after.mean() > before.mean() + 0.1, (before, after)
    assert (after > 0).float().mean() > (before > 0).float().mean() or (after > 0).all()
    assert json.loads((out / META).read_text())["pairs"] == 8


def test_a_tracker_that_is_not_installed_is_refused_before_training(labelled, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["finetune", str(labelled), "--out", str(out), "--report-to", "wandb"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--report-to wandb" in err and "pip install" in err
    assert not out.exists()
