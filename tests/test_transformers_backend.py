"""The local backend on the real default model: every term equals a fresh forward pass."""

import numpy as np
import pytest
import torch

from icm.backends.loading import cache_dir
from icm.backends.transformers import TransformersModel, label_token_ids
from icm.core.data import PromptFormat, loo_orders

CLAIMS = [
    ("Is the sky blue?", "Yes."),
    ("What happens if you crack your knuckles a lot?", "Nothing in particular happens."),
    (
        "Who wrote Hamlet?",
        "Hamlet was written by Christopher Marlowe in 1620, long after his death.",
    ),
    ("Can pigs fly?", "No, pigs cannot fly on their own, though they can ride in airplanes."),
    ("Is water wet?", "It depends."),
    (
        "What is the capital of Australia?",
        "Sydney is the capital and largest city of Australia by far.",
    ),
    ("How many legs does a spider have?", "Eight."),
]
PROMPTS = [f"Question: {q}\nClaim: {c}\nI think this claim is" for q, c in CLAIMS]
LABELS = [1, 1, 0, 1, 0, 0, 1]


def fresh(model: TransformersModel, text: str) -> np.ndarray:
    """[log P(False), log P(True)] from one cache-free forward pass over `text`, tokenised whole."""
    ids = model.tok(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model.model(input_ids=ids).logits[0, -1]
    logp = torch.log_softmax(logits.float(), -1)
    mass = torch.stack([torch.logsumexp(logp[i], 0) for i in model.label_ids])
    return (mass - torch.logsumexp(mass, 0)).double().numpy()


def joined(fmt: PromptFormat, demos: list[int], query: int) -> str:
    return fmt.prefix + "".join(fmt.demo(PROMPTS[j], LABELS[j]) for j in demos) + PROMPTS[query]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("scorer", ["dc", "naive", "dc-packed"])
def test_leave_one_out_terms_equal_fresh_forward_passes(default_model, n, scorer):
    """Packed: whole subtrees (here up to 300 tokens: sibling leaves and more) in one forward
    pass each, with a tree-shaped attention mask over the shared cache."""
    default_model.scorer = scorer.removesuffix("-packed")
    default_model.pack_tokens = 300 if scorer.endswith("packed") else 0
    calls = default_model.calls
    terms = default_model.loo_logprobs(PROMPTS[:n], LABELS[:n])
    default_model.pack_tokens = 0
    if scorer == "dc-packed" and n > 2:
        assert default_model.calls - calls < 2 * n  # fewer passes than the 3n unpacked
    for i, order in enumerate(loo_orders(n)):
        assert sorted(order) == [j for j in range(n) if j != i]
        expected = fresh(default_model, joined(default_model.fmt, order, i))
        assert np.abs(terms[i] - expected).max() <= 1e-4, (n, i)
    assert np.allclose(np.exp(terms).sum(1), 1.0)


def test_order_matters_so_the_check_has_teeth(default_model):
    """Reversing the demonstrations moves the term by far more than the tolerance above."""
    order = loo_orders(7)[0]
    a = fresh(default_model, joined(default_model.fmt, order, 0))
    b = fresh(default_model, joined(default_model.fmt, order[::-1], 0))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("pack", [0, 200])
def test_query_logprobs_equal_fresh_forward_passes(default_model, pack):
    default_model.scorer = "dc"
    default_model.pack_tokens = pack  # 200: the queries side by side on the context, two passes
    out = default_model.query_logprobs(PROMPTS[:4], LABELS[:4], PROMPTS[4:])
    default_model.pack_tokens = 0
    for k, q in enumerate(range(4, 7)):
        assert (
            np.abs(out[k] - fresh(default_model, joined(default_model.fmt, [0, 1, 2, 3], q))).max()
            <= 1e-4
        )


def test_divide_and_conquer_processes_fewer_tokens(default_model):
    default_model.scorer = "naive"
    before = default_model.tokens
    default_model.loo_logprobs(PROMPTS, LABELS)
    naive = default_model.tokens - before
    default_model.scorer = "dc"
    before = default_model.tokens
    default_model.loo_logprobs(PROMPTS, LABELS)
    assert default_model.tokens - before < naive * 0.7


def test_label_tokens_are_exact_variants(default_model):
    tok = default_model.tok
    words = {tok.decode([i]) for i in label_token_ids(tok, " True")}
    assert words <= {" True", "True", " true", "true", " TRUE", "TRUE"}
    assert " True" in words and not any("untrue" in w.lower() for w in words)


def test_default_model_is_converted_once_into_the_cache(default_model):
    folders = list((cache_dir() / "models").glob("SmolLM2-135M-Instruct.Q4_1-*"))
    assert folders and (folders[0] / "model.safetensors").exists()
    assert default_model.model.config.model_type == "llama"


def tiny_sliding_window_model(window: int):
    """A random-weight Mistral (sliding-window attention) with the default model's tokenizer:
    built here, nothing downloaded."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from icm.backends.loading import resolve

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve("default"))
    config = MistralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=window,
    )
    return MistralForCausalLM(config).eval(), tok


def test_sliding_window_models_are_exact_inside_the_window_and_refused_past_it(
    default_model_converted,
):
    from icm.errors import ContextLengthError

    model, tok = tiny_sliding_window_model(window=56)
    dc = TransformersModel(model, tok, scorer="dc")
    naive = TransformersModel(model, tok, scorer="naive")
    assert dc.max_context == 56 and naive.max_context == 512  # batches are cut to the window
    short = [f"Claim: {c}\nI think this claim is" for c in "abc"]
    labels = [1, 0, 1]
    np.testing.assert_allclose(
        dc.loo_logprobs(short, labels), naive.loo_logprobs(short, labels), atol=1e-5
    )
    long = [p.replace("Claim:", "Claim: word word word word word") for p in short]
    with pytest.raises(ContextLengthError, match="sliding window.*--scorer naive"):
        dc.loo_logprobs(long, labels)
    terms = naive.loo_logprobs(long, labels)  # the naive scorer handles any prompt exactly
    assert np.isfinite(terms).all()
