"""Asking a server for the label words its top-k answer left out (`backends/named.py`): the
logic, against stand-in answers for the three kinds of server (one that reports the unforced
log-prob of a forced token, one that reports the forced distribution, one that ignores the
bias). The real llama.cpp server is exercised in test_openai_backend.py."""

from __future__ import annotations

import math

import pytest

from icm.backends.answers import label_logprobs, label_variants
from icm.backends.named import NamedTokens, forced, missing_label
from icm.errors import ServerError

VARIANTS = [label_variants(" False"), label_variants(" True")]
SPELLINGS = [[(" False", 10), (" false", 11)], [(" True", 20), (" true", 21)]]
TRUTH = {10: -1.0, 11: -2.5, 20: -4.0, 21: -6.0, 99: -0.3}
NAMES = {10: " False", 11: " false", 20: " True", 21: " true", 99: " maybe"}


def answer(token_id: int, value: float) -> dict:
    entry = {"id": token_id, "token": NAMES[token_id], "logprob": value, "top_logprobs": []}
    return {"choices": [{"logprobs": {"content": [entry]}}]}


def raw(token_id: int) -> dict:
    return answer(token_id, TRUTH[token_id])


def biased(token_id: int) -> dict:
    return answer(token_id, -1e-4)  # the forced token has all the mass after the bias


def ignored(token_id: int) -> dict:
    return answer(99, TRUTH[99])


TOP = [(" maybe", -0.3), (" False", -1.0)]  # True is missing, " false" is below the top k


def test_a_raw_reporting_server_completes_the_answer_exactly():
    named = NamedTokens(VARIANTS, SPELLINGS)
    sent: list[int] = []

    def send(i: int) -> dict:
        sent.append(i)
        return raw(i)

    top = named.complete(TOP, send)
    assert named.works is True and missing_label(top, VARIANTS) is None
    assert sorted(sent) == [10, 11, 20, 21]  # the check on " False", then what was missing
    lp = label_logprobs(top, VARIANTS, 2)
    f = math.log(math.exp(-1.0) + math.exp(-2.5))
    t = math.log(math.exp(-4.0) + math.exp(-6.0))
    assert lp[1] - lp[0] == pytest.approx(t - f, abs=1e-9)


@pytest.mark.parametrize("server", [biased, ignored])
def test_other_servers_keep_the_bound_and_are_not_asked_again(server):
    named = NamedTokens(VARIANTS, SPELLINGS)
    calls: list[int] = []

    def send(i: int) -> dict:
        calls.append(i)
        return server(i)

    assert named.complete(TOP, send) == TOP
    assert named.works is False and calls == [10]
    assert named.complete(TOP, send) == TOP and calls == [10]


def test_an_answer_with_both_labels_or_neither_is_left_alone():
    named = NamedTokens(VARIANTS, SPELLINGS)

    def send(i: int) -> dict:
        raise AssertionError("nothing to ask")

    both = [(" True", -0.5), (" False", -1.0)]
    neither = [(" maybe", -0.1)]
    assert named.complete(both, send) == both and named.complete(neither, send) == neither
    assert named.works is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": []},
        {"choices": [{"logprobs": {"tokens": ["x"], "token_logprobs": []}}]},
        {"choices": [{"logprobs": {"tokens": ["x"], "token_logprobs": [float("nan")]}}]},
        {"choices": [{"logprobs": {"tokens": ["x"], "token_logprobs": [2.0]}}]},
        [],
    ],
)
def test_a_forced_answer_without_a_sampled_log_prob_is_one_line(body):
    with pytest.raises(ServerError) as e:
        forced(body)
    assert "\n" not in str(e.value)


def test_the_legacy_layout_is_read():
    body = {"choices": [{"logprobs": {"tokens": [" True"], "token_logprobs": [-3.25]}}]}
    assert forced(body) == (" True", -3.25)
