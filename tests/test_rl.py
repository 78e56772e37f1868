"""`icm rl`: real GRPO and RLOO runs of the default model against a reward model icm trained (a
few steps, tiny completions, one thread), a SIGKILL and resume, and the bad inputs.

The reward model is trained once per session (conftest: `tiny_reward_model`); the uninterrupted
three-step run is made once per module and serves as the reference of the kill test.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from icm import files
from icm.backends.loading import resolve
from icm.backends.transformers import TransformersModel
from icm.cli import main
from icm.export import load_labelled, records
from icm.train import META
from icm.train.prompts import load_prompts, task_prompt_template
from icm.train.reward import margins

from .conftest import PAIRS, comparison_rows, events

pytest.importorskip("trl")

ICM = Path(sys.executable).parent / "icm"
TINY = ["--group-size", "2", "--prompts-per-step", "2", "--max-completion-length", "4"]
TINY += ["--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.json"
    path.write_text(json.dumps(comparison_rows()))  # a pairs file: each query comes twice
    return path


def rl_argv(reward: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "rl",
        "--reward",
        str(reward),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_reward_model, prompts, tmp_path_factory) -> Path:
    """Three GRPO steps, a checkpoint after each, uninterrupted."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rl") / "policy"
    argv = rl_argv(tiny_reward_model, prompts, out, "--steps", "3", "--save-steps", "1")
    assert main([*argv, "--lr", "1e-3"]) == 0
    return out


def progress(out: Path) -> list[dict]:
    return files.read_jsonl(out / "progress.jsonl")


@pytest.mark.slow
def test_rl_trains_logs_and_loads_as_a_model(trained, default_model_converted):
    meta = json.loads((trained / META).read_text())
    assert meta["kind"] == "rl" and meta["status"] == "done" and meta["steps"] == 3
    # The prompts take the form the reward model was trained on, each query once.
    assert meta["prompt_template"] == "Query: {question}\nResponse 1:"
    assert meta["prompts"]["used"] == len(PAIRS)
    rows = progress(trained)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert isinstance(r["reward"], float) and r["completion_length"] <= 4
        assert r["kl"] is not None and r["kl"] >= 0
    assert rows[1]["kl"] > 0  # the policy moved away from where it started
    model = TransformersModel.load(str(trained))  # what --model DIR loads everywhere
    base = TransformersModel.load(default_model_converted)
    moved = [
        (p - q).abs().max().item()
        for p, q in zip(model.model.parameters(), base.model.parameters(), strict=True)
    ]
    assert max(moved) > 1e-4
    assert not (trained / "adapter_config.json").exists()  # merged by default
    assert {"config.json", "model.safetensors"} <= set(meta["files"])  # what --overwrite removes
    before = (trained / META).read_bytes()
    assert main(["rl", "--resume", str(trained), "--steps", "2"]) == 2  # below the 3 done
    assert (trained / META).read_bytes() == before


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_continues_to_the_same_policy(
    trained, tiny_reward_model, prompts, tmp_path
):
    mine = tmp_path / "prompts.json"
    mine.write_bytes(prompts.read_bytes())
    out = tmp_path / "policy"
    argv = rl_argv(tiny_reward_model, mine, out, "--steps", "3", "--save-steps", "1")
    proc = subprocess.Popen([str(ICM), *argv, "--lr", "1e-3"], stderr=subprocess.PIPE)
    first = out / "checkpoints" / "checkpoint-1" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not (out / "model.safetensors").exists(), "it finished before it could be killed"
    assert json.loads((out / META).read_text())["status"] == "training"

    # Options that change what is computed are refused on resume, by name, before any write.
    before = (out / META).read_bytes()
    assert main(["rl", "--resume", str(out), "--kl-weight", "0.2"]) == 2
    assert (out / META).read_bytes() == before

    assert main(["rl", "--resume", str(out), "--threads", "1", "--no-progress"]) == 0
    assert [r["step"] for r in progress(out)] == [1, 2, 3]
    # The resumed run is the uninterrupted one: same rewards, same weights.
    assert [r["reward"] for r in progress(out)] == [r["reward"] for r in progress(trained)]
    from safetensors.torch import load_file

    a, b = load_file(out / "model.safetensors"), load_file(trained / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # More steps later (--steps is the new total), but only on the prompts it began with.
    mine.write_text(json.dumps(comparison_rows()[:4]))
    before = (out / META).read_bytes()
    assert main(["rl", "--resume", str(out), "--steps", "4", "--threads", "1"]) == 2
    assert (out / META).read_bytes() == before


def test_resume_refuses_changed_options_with_one_line(tiny_reward_model, prompts, tmp_path, capsys):
    out = tmp_path / "p"
    out.mkdir()
    cfg = {"kind": "rl", "status": "training", "config": {"reward": str(tiny_reward_model)}}
    (out / META).write_text(json.dumps(cfg))
    assert main(["rl", "--resume", str(out), "--group-size", "3", "--lr", "1e-4"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"icm: {out}: --resume keeps the run's settings; not --group-size, --lr"]
    assert main(["rl", "--resume", str(tmp_path / "none"), "--steps", "3"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_rloo_with_a_length_penalty_saves_an_adapter(tiny_reward_model, prompts, tmp_path):
    out = tmp_path / "policy"
    argv = rl_argv(tiny_reward_model, prompts, out, "--steps", "1", "--algorithm", "rloo")
    argv += ["--report-to", "tensorboard"]
    assert main([*argv, "--length-penalty", "0.05", "--adapter"]) == 0
    (row,) = progress(out)
    assert row["rewards/length_penalty/mean"] == pytest.approx(-0.05 * row["completion_length"])
    curves = events(out / "tensorboard")  # TRL's logs, read back from the event files
    assert curves["train/rewards/length_penalty/mean"] == [
        pytest.approx(row["rewards/length_penalty/mean"], rel=1e-5)
    ]
    assert (out / "adapter_model.safetensors").stat().st_size < 20e6
    assert not (out / "model.safetensors").exists()
    TransformersModel.load(str(out))  # an adapter folder loads as --model, on its base


def tiny_policy(folder: Path) -> Path:
    """A random two-layer Llama with a word-level tokenizer of its own (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = [r[f] for r in comparison_rows() for f in ("question", "choice", "choice_2")]
    tok.train_from_iterator(
        [*words, "Query: Response 1:"], trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"])
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.pad_token = "<eos>"
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=1,
        pad_token_id=1,
        bos_token_id=1,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_policy_with_another_tokenizer_is_scored_as_text(
    tiny_reward_model, prompts, tmp_path, capsys
):
    policy = tiny_policy(tmp_path / "tiny")
    out = tmp_path / "policy"
    argv = rl_argv(tiny_reward_model, prompts, out, "--steps", "1", "--model", str(policy))
    assert main(argv) == 0
    assert "re-tokenised by the reward model's" in capsys.readouterr().err
    assert json.loads((out / META).read_text())["status"] == "done"


# -- bad input: one line, exit 2, nothing written --------------------------------------------
def bad_cases(tmp: Path, reward: Path, converted: str) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty.json").write_text("[]")
    (tmp / "noprompt.jsonl").write_text('{"text": "hi"}\n')
    (tmp / "number.jsonl").write_text('{"prompt": "fine"}\n{"prompt": 7}\n')
    good = tmp / "good.jsonl"
    good.write_text('{"prompt": "Query: hello\\nResponse 1:"}\n')
    mine = tmp / "mine"
    mine.mkdir(exist_ok=True)
    (mine / "notes.txt").write_text("mine")
    earlier = tmp / "earlier"
    earlier.mkdir(exist_ok=True)
    (earlier / META).write_text('{"kind": "rl", "status": "training"}')
    base = ["--reward", str(reward), "--prompts", str(good)]
    return {
        "no prompts": (
            ["--reward", str(reward), "--prompts", str(tmp / "empty.json")],
            "no prompts",
        ),
        "no prompt field": (
            ["--reward", str(reward), "--prompts", str(tmp / "noprompt.jsonl")],
            "noprompt.jsonl: row 1: no prompt",
        ),
        "prompt not text": (
            ["--reward", str(reward), "--prompts", str(tmp / "number.jsonl")],
            "number.jsonl: row 2: field 'prompt' must be text",
        ),
        "missing prompts file": (
            ["--reward", str(reward), "--prompts", str(tmp / "nope.jsonl")],
            "nope.jsonl: data file not found",
        ),
        "reward is a causal LM": (
            ["--reward", converted, "--prompts", str(good)],
            "not a one-output sequence classifier",
        ),
        "reward missing": (
            ["--reward", str(tmp / "no-rm"), "--prompts", str(good)],
            "no-rm: no such model folder",
        ),
        "group size 1": ([*base, "--group-size", "1"], "--group-size must be at least 2"),
        "negative KL": ([*base, "--kl-weight", "-1"], "--kl-weight must be at least 0"),
        "zero lr": ([*base, "--lr", "0"], "--lr must be above 0"),
        "zero steps": ([*base, "--steps", "0"], "--steps must be at least 1"),
        "float16": ([*base, "--dtype", "float16"], "--dtype float16"),
        "template without field": ([*base, "--template", "Hi"], "--template: 'Hi' names no field"),
        "all too long": ([*base, "--max-prompt-tokens", "1"], "longer than --max-prompt-tokens 1"),
        "too few prompts": (base, "1 prompt(s) to train on, fewer than --prompts-per-step 2"),
        "out is a user's folder": ([*base, "--out", str(mine)], "a folder icm did not write"),
        "out is the prompts file": ([*base, "--out", str(good)], "is a file"),
        "out is an earlier training": (
            [*base, "--out", str(earlier)],
            "holds an icm training: --resume it, or pass --overwrite",
        ),
        "out is the reward model": ([*base, "--out", str(reward), "--overwrite"], "is an input"),
    }


CASE_IDS = [
    "no prompts",
    "no prompt field",
    "prompt not text",
    "missing prompts file",
    "reward is a causal LM",
    "reward missing",
    "group size 1",
    "negative KL",
    "zero lr",
    "zero steps",
    "float16",
    "template without field",
    "all too long",
    "too few prompts",
    "out is a user's folder",
    "out is the prompts file",
    "out is an earlier training",
    "out is the reward model",
]


@pytest.mark.parametrize("name", CASE_IDS)
def test_bad_input_gives_one_line_and_writes_nothing(
    name, tiny_reward_model, default_model_converted, tmp_path, capsys
):
    argv, expect = bad_cases(tmp_path, tiny_reward_model, default_model_converted)[name]
    out = tmp_path / "new-policy"
    if "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    snapshot = {p: digest(p) for p in tiny_reward_model.parent.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["rl", *argv, "--threads", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("icm: "), captured.err
    assert expect in lines[0]
    assert sorted(q.name for q in tmp_path.iterdir()) == before
    assert not out.exists()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "earlier").iterdir()) == [META]
    assert {p: digest(p) for p in snapshot} == snapshot


def digest(path: Path) -> str:
    """A file's content in a few bytes (the reward model's weights are 0.5 GB: holding two copies
    per case in memory slowed the whole suite)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- the pieces ---------------------------------------------------------------------------------
def test_prompts_of_a_pairs_file_follow_the_reward_models_template(prompts, tmp_path):
    from icm.tasks import get_task

    template = task_prompt_template(get_task("alpaca"))
    assert template == "Query: {question}\nResponse 1:"
    got = load_prompts(str(prompts), template)
    assert [p.question for p in got] == [q for q, *_ in PAIRS]
    assert got[0].text == "Query: What is 2 + 2?\nResponse 1:" and got[0].row == 1
    assert got[4].category == "harmlessness" and got[1].row == 3
    alpaca = tmp_path / "alpaca.jsonl"  # the Alpaca instruction layout
    alpaca.write_text(
        '{"instruction": "Add these.", "input": "2, 3", "category": "math"}\n'
        '{"instruction": "Say hi.", "input": ""}\n{"prompt": "As is."}\n'
    )
    texts = [p.text for p in load_prompts(str(alpaca), "Q: {question}\nA:")]
    assert texts == ["Q: Add these.\n\n2, 3\nA:", "Q: Say hi.\nA:", "As is."]


def test_margin_from_confidence(comparison_run):
    data = load_labelled(comparison_run)
    pairs = records(data, "rm")
    m = margins(data, pairs, 2.0)
    conf = [0.6 + 0.05 * (k % 4) for k in range(len(data.rows))]
    expect = [2 * (2 * (conf[2 * k] + conf[2 * k + 1]) / 2 - 1) for k in range(len(pairs))]
    assert m == pytest.approx(expect)
    assert margins(data, pairs, 0.0) == [0.0] * len(pairs)


def test_reward_model_records_its_prompt_form(tiny_reward_model):
    meta = json.loads((tiny_reward_model / META).read_text())
    assert meta["kind"] == "reward" and meta["prompt_template"] == "Query: {question}\nResponse 1:"
    assert resolve("default")  # the base it names loads


def test_a_recorded_template_without_fields_gives_every_row_one_prompt(tmp_path):
    rows = tmp_path / "demo.jsonl"  # the demo task's pairs start with "Sentence:" and no field
    rows.write_text('{"sentence": "It is red."}\n{"sentence": "Is it red?"}\n')
    assert [p.text for p in load_prompts(str(rows), "Sentence:")] == ["Sentence:"]


def test_the_query_of_an_exported_pair_prompt_is_recovered_for_a_pairwise_judge(tmp_path):
    rows = tmp_path / "pairs.jsonl"  # `icm export --format rm` of an alpaca run
    rows.write_text('{"prompt": "Query: Name a colour.\\nResponse 1:", "chosen": " Blue."}\n')
    (p,) = load_prompts(str(rows), "Query: {question}\nResponse 1:")
    assert p.text == "Query: Name a colour.\nResponse 1:" and p.question == "Name a colour."
    (p,) = load_prompts(str(rows), "{question}")
    assert p.question == p.text


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"step": "2", "reward": 0.1}', "row 2: field 'step' must be a step number, got '2'"),
        ('{"reward": 0.1}', "row 2: field 'step' must be a step number, got None"),
        ('{"step": 0}', "row 2: field 'step' must be a step number, got 0"),
        ("[1, 2]", "line 2: expected an object"),
    ],
)
def test_an_edited_progress_file_is_refused_before_a_resume_changes_anything(
    tmp_path, capsys, line, message
):
    """A resume reads progress.jsonl before it writes: one line, the folder as it was."""
    from icm.train.rlconfig import KIND, RLConfig

    out = tmp_path / "policy"
    (out / "checkpoints").mkdir(parents=True)
    cfg = RLConfig(reward=str(tmp_path / "rm"), prompts=str(tmp_path / "p.jsonl"))
    files.write_json(out / META, {"kind": KIND, "status": "training", "config": cfg.__dict__})
    (out / "progress.jsonl").write_text('{"step": 1, "reward": 0.0}\n' + line + "\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["rl", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"progress.jsonl: {message}" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_overwrite_replaces_only_what_icm_rl_wrote(trained, tiny_reward_model, prompts, tmp_path):
    import shutil

    out = tmp_path / "policy"
    shutil.copytree(trained, out)
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text("{}")
    argv = rl_argv(tiny_reward_model, prompts, out, "--steps", "1", "--save-steps", "1")
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval" / "scores.json").exists()
    assert json.loads((out / META).read_text())["steps"] == 1
    assert [r["step"] for r in progress(out)] == [1]
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]


def test_a_link_where_rl_writes_is_refused_before_a_resume_prunes_through_it(tmp_path, capsys):
    """An unfinished checkpoint is pruned on resume: never one reached through a link."""
    from icm.train.rlconfig import KIND, RLConfig

    victim = tmp_path / "mine"
    (victim / "checkpoint-7").mkdir(parents=True)
    (victim / "checkpoint-7" / "weights.bin").write_text("precious")
    out = tmp_path / "policy"
    out.mkdir()
    cfg = RLConfig(reward=str(tmp_path / "rm"), prompts=str(tmp_path / "p.jsonl"))
    files.write_json(out / META, {"kind": KIND, "status": "training", "config": cfg.__dict__})
    (out / "checkpoints").symlink_to(victim, target_is_directory=True)
    assert main(["rl", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoints: is a link where icm rl writes" in err, err
    assert (victim / "checkpoint-7" / "weights.bin").read_text() == "precious"


def test_a_recorded_template_that_reaches_into_its_values_is_refused(tmp_path):
    """A reward-model folder from elsewhere: `{question.__class__}` would put Python's insides
    into every prompt."""
    from icm.errors import ConfigError
    from icm.train.prompts import recorded_template

    folder = tmp_path / "rm"
    folder.mkdir()
    files.write_json(folder / META, {"prompt_template": "Q: {question.__class__.__mro__}"})
    with pytest.raises(ConfigError, match=r"icm_train.json: prompt_template: only plain"):
        recorded_template(str(folder))
    files.write_json(folder / META, {"prompt_template": "Query: {question}\nResponse 1:"})
    assert recorded_template(str(folder)) == "Query: {question}\nResponse 1:"


def test_the_files_a_meta_lists_never_lead_out_of_the_folder(tmp_path):
    """An edited or foreign META cannot make --overwrite remove the folder above, or beside."""
    from icm.train.rl import ours

    out = tmp_path / "policy"
    out.mkdir()
    listed = ["..", ".", "", "../x", "/etc/passwd", "a/b", "a\\b", "model.safetensors", 7]
    files.write_json(out / META, {"kind": "rl", "files": listed})
    kept = {p.name for p in ours(out)}
    assert kept == {"checkpoints", "tensorboard", "progress.jsonl", "model.safetensors", META}
    assert all(p.parent == out for p in ours(out))
