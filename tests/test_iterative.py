"""Iterative ICM end to end on the real default model: two batches of four TruthfulQA claims, a
one-step LoRA fine-tune between them, then a resume that redoes only what was removed."""

import json
import shutil

import numpy as np
import pytest

from icm.backends.transformers import TransformersModel
from icm.cli import main
from icm.export import prompts, read_labelled
from icm.run.iterative import MODEL_DIR
from icm.tasks import get_task

from .conftest import shared

pytest.importorskip("peft")


def argv(data, out, *extra):
    return [
        "run",
        "--algorithm",
        "paper",
        "--task",
        "truthfulqa",
        "--data",
        str(data),
        "--limit",
        "8",
        "--iterations",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--iterative-finetune",
        *extra,
    ]


@pytest.mark.slow
def test_second_batch_is_labelled_by_the_model_tuned_on_the_first(default_model, tmp_path):
    data = shared("truthfulqa/train.json")
    out = tmp_path / "run"
    tune = ["--batch-size", "4", "--finetune-max-steps", "1", "--finetune-lr", "1e-3"]
    assert main(argv(data, out, *tune)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batches"] == 2
    assert summary["labelled_by"] == ["default", f"batches/000/{MODEL_DIR}"]
    tuned_dir = out / "batches" / "000" / MODEL_DIR
    assert json.loads((tuned_dir / "icm_train.json").read_text())["records"] == 4
    assert not (out / "batches" / "001" / MODEL_DIR).exists()  # nothing left to label
    merged = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r["icm_batch"] for r in merged] == [0] * 4 + [1] * 4

    # Batch 2's log-odds are the fine-tuned model's leave-one-out terms, not the base model's.
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps(r) + "\n" for r in merged[4:]))
    batch = read_labelled(second, get_task("truthfulqa"))
    logodds = np.array([r["icm_logodds"] for r in merged[4:]])
    assert all(r["icm_searched"] for r in merged[4:])
    labels = [int(y) for y in batch.labels]
    tuned = TransformersModel.load(str(tuned_dir)).loo_logprobs(prompts(batch), labels)
    base = default_model.loo_logprobs(prompts(batch), labels)
    np.testing.assert_allclose(tuned[:, 1] - tuned[:, 0], logodds, atol=1e-4)
    assert np.abs(base[:, 1] - base[:, 0] - logodds).max() > 1e-2

    # Resume after losing the second batch: the model is reused, the labels come out the same.
    weights = tuned_dir / "adapter_model.safetensors"  # an adapter, not a copy of the model
    assert weights.stat().st_size < 20e6 and not (tuned_dir / "model.safetensors").exists()
    stamp = weights.stat().st_mtime_ns
    before = (out / "labels.jsonl").read_text()
    shutil.rmtree(out / "batches" / "001" / "chain-0")
    (out / "labels.jsonl").unlink()
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    assert weights.stat().st_mtime_ns == stamp
    assert (out / "labels.jsonl").read_text() == before


def test_iterative_needs_two_batches(tmp_path, capsys):
    data = shared("truthfulqa/train.json")
    assert main(argv(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "needs at least two batches" in err and "--batch-size" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
