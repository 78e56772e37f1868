"""The OpenAI-compatible backend against a real llama.cpp server (xllamacpp) on 127.0.0.1.

The server runs the Q4_1 GGUF of the default model; the transformers backend runs the same
weights dequantised to fp32, so log-probs agree closely but not exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from icm.backends.answers import label_logprobs, label_variants, top_logprobs
from icm.backends.openai import API_KEY_VARS, OpenAIModel
from icm.backends.transformers import TransformersModel
from icm.core.data import loo_orders
from icm.errors import IcmError, ServerError
from icm.tasks import resolve_task

from .conftest import shared

pytest.importorskip("xllamacpp")
from .server import LlamaServer  # noqa: E402

KEY = "icm-test-key-5d1f0a7c"
VARIANTS = [label_variants(" False"), label_variants(" True")]


pytestmark = pytest.mark.slow  # a real llama.cpp server, started once for the module


@pytest.fixture(scope="module")
def server():
    with LlamaServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def task():
    return resolve_task("truthfulqa")


@pytest.fixture(scope="module")
def prompts(task):
    data = task.load(str(shared("truthfulqa/train.json"))).first_groups(16)
    return [ex.prompt for ex in data.examples]


def client(server, task, **kw) -> OpenAIModel:
    return OpenAIModel(server.base_url, fmt=task.fmt, api_key=KEY, **kw)


# -- parsing ----------------------------------------------------------------------------------
def test_reads_both_layouts_and_only_exact_label_tokens():
    assert VARIANTS[1] == {"True", " True", "true", " true", "TRUE", " TRUE"}
    vllm = {"choices": [{"logprobs": {"top_logprobs": [{" true": -0.5, " untrue": -1.0}]}}]}
    llama = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "top_logprobs": [
                                {"id": 1, "token": " false", "bytes": [], "logprob": -1.0},
                                {"id": 2, "token": " falsehood", "bytes": [], "logprob": -0.1},
                                {"id": 3, "token": "True", "bytes": [], "logprob": -2.0},
                            ]
                        }
                    ]
                }
            }
        ]
    }
    assert top_logprobs(vllm) == [(" true", -0.5), (" untrue", -1.0)]
    top = top_logprobs(llama)
    assert top == [(" false", -1.0), (" falsehood", -0.1), ("True", -2.0)]
    # " falsehood" is not a spelling of False: the masses are e^-1 and e^-2 only.
    np.testing.assert_allclose(label_logprobs(top, VARIANTS, 3), -np.log1p(np.exp([-1.0, 1.0])))
    # One label missing: its mass is bounded by the smallest top-k probability (e^-1 here).
    np.testing.assert_allclose(
        label_logprobs(top_logprobs(vllm), VARIANTS, 2), -np.log1p(np.exp([0.5, -0.5]))
    )
    with pytest.raises(ServerError, match="top 2 .*--top-logprobs.*--max-logprobs"):
        label_logprobs([(" yes", -1.0), (" no", -2.0)], VARIANTS, 2)
    with pytest.raises(ServerError, match="no top log-probs"):
        top_logprobs({"choices": [{"text": " True"}]})


# -- the real server --------------------------------------------------------------------------
@pytest.mark.slow
def test_same_tokens_and_close_logprobs_as_transformers(server, task, prompts, default_model):
    """Prompts go as token ids, each demonstration tokenised once by the server: they are the
    ids (no BOS on either side for this model) that the transformers tokenizer gives the whole
    text, as many as the transformers backend's naive scorer runs for the same leave-one-out
    terms. Log-probs measured: log-odds differ by up to about 0.25-0.5 nats (the server
    quantises activations for its Q4_1 matmuls, transformers runs the dequantised weights in
    fp32), mean about 0.1; the argmax label agreed on every prompt tried."""
    model = client(server, task, concurrency=1)
    labels = [i % 2 for i in range(5)]
    orders = loo_orders(5)
    for i, sent in enumerate(model.loo_prompts(prompts[:5], labels)):
        text = "".join(task.fmt.demo(prompts[j], labels[j]) for j in orders[i]) + prompts[i]
        assert list(sent) == default_model.tok(text).input_ids
    naive = TransformersModel(default_model.model, default_model.tok, task.fmt, scorer="naive")
    loo_t = naive.loo_logprobs(prompts[:5], labels)
    loo_s = model.loo_logprobs(prompts[:5], labels)
    assert model.calls == naive.calls == 5
    assert model.tokens == naive.tokens  # the server's usage.prompt_tokens
    assert model.cached_tokens > 0  # the shared prefixes came from the server's prompt cache
    zero_t = naive.query_logprobs([], [], prompts[5:])
    zero_s = model.query_logprobs([], [], prompts[5:])
    s, t = np.concatenate([loo_s, zero_s]), np.concatenate([loo_t, zero_t])
    np.testing.assert_allclose(np.exp(s).sum(1), 1.0, atol=1e-9)
    diff = np.abs((s[:, 1] - s[:, 0]) - (t[:, 1] - t[:, 0]))
    print(
        f"\n{len(s)} prompts, log-odds |server - transformers|: max {diff.max():.3f} "
        f"mean {diff.mean():.3f}"
    )
    assert diff.max() < 0.75 and diff.mean() < 0.25
    assert np.mean(np.argmax(s, 1) == np.argmax(t, 1)) >= 0.9


def test_a_label_left_out_of_the_top_k_is_asked_for_by_name(server, task, prompts):
    """With k=1, one label word is in the top k at most: the other's log-probs come from
    requests that force each spelling (llama.cpp reports the unforced log-prob), so the score
    is the one k=20 gives, where both words are ranked (up to this server's run-to-run noise,
    measured up to ~0.1 nats; the bound alone would put every log-odds near 0, about 1-1.8
    from these)."""
    wide = client(server, task, concurrency=1)
    ref = wide.query_logprobs([], [], prompts[:6])
    assert (wide.scores, wide.approximate_scores) == (6, 0)
    narrow = client(server, task, concurrency=1, top_logprobs=1)
    got = narrow.query_logprobs([], [], prompts[:6])
    assert (narrow.scores, narrow.approximate_scores) == (6, 0)
    assert narrow.calls > 6  # the forced requests
    lo_ref, lo_got = ref[:, 1] - ref[:, 0], got[:, 1] - got[:, 0]
    print(f"\nlog-odds k=1 + forced vs k=20: max |diff| {np.abs(lo_ref - lo_got).max():.4f}")
    np.testing.assert_allclose(lo_got, lo_ref, atol=0.3)
    assert np.abs(lo_got - lo_ref).mean() < 0.15


def test_a_wide_top_k_with_tokens_that_share_a_text_is_read(server, task, prompts):
    """At k=200 llama.cpp lists byte pieces of one character that all decode to " ": distinct
    tokens, not a broken layout, so the answer is read, with the score k=20 gives."""
    ref = client(server, task, concurrency=1).query_logprobs([], [], prompts[:3])
    wide = client(server, task, concurrency=1, top_logprobs=200)
    got = wide.query_logprobs([], [], prompts[:3])
    assert (wide.scores, wide.approximate_scores) == (3, 0)
    np.testing.assert_allclose(got[:, 1] - got[:, 0], ref[:, 1] - ref[:, 0], atol=0.3)


def test_no_label_in_top_k_is_a_clear_error(server, task):
    model = client(server, task, top_logprobs=1)
    with pytest.raises(ServerError, match="top 1 next tokens.*--max-logprobs"):
        model.query_logprobs([], [], ["The capital of France is"])


class FlakyProxy:
    """A real HTTP server in front of the llama.cpp one that answers the first `fail` requests
    with `status`, as an overloaded server or a gateway does, and forwards the rest; paths that
    end with one of `missing` get 404, as from a server without that endpoint."""

    def __init__(self, target: str, status: int, fail: int, missing: tuple[str, ...] = ()) -> None:
        outer = self
        self.hits = 0
        self.missing: list[str] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, body: bytes | None) -> None:
                with outer.lock:
                    outer.hits += 1
                    failing = outer.hits <= fail
                if self.path.endswith(missing):
                    with outer.lock:
                        outer.missing.append(self.path)
                    data = b'{"error": {"message": "not found"}}'
                    self.send_response(404)
                elif failing:
                    data = json.dumps({"error": {"message": f"busy ({status})"}}).encode()
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                else:
                    req = urllib.request.Request(target + self.path, body, dict(self.headers))
                    with urllib.request.urlopen(req, timeout=60) as r:
                        data = r.read()
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_token_counts_come_from_the_servers_tokenizer(server, task, prompts, default_model):
    model = client(server, task, concurrency=2)
    assert model.count_tokens(prompts) == default_model.count_tokens(prompts)
    assert model.count_tokens([]) == []
    proxy = FlakyProxy(f"http://127.0.0.1:{server.port}", 503, fail=0, missing=("/tokenize",))
    try:
        model = OpenAIModel(proxy.url, fmt=task.fmt, api_key=KEY)
        assert model.count_tokens(prompts[:2]) is None  # batching then falls back to a guess
        assert model.count_tokens(prompts[:2]) is None
    finally:
        proxy.close()
    assert proxy.missing == ["/tokenize"]  # probed once


@pytest.mark.parametrize("status", [429, 503])
def test_retries_busy_answers_then_succeeds(server, task, prompts, status):
    direct = client(server, task).query_logprobs([], [], prompts[:3])
    proxy = FlakyProxy(f"http://127.0.0.1:{server.port}", status, fail=2)
    try:
        model = OpenAIModel(proxy.url, fmt=task.fmt, api_key=KEY, concurrency=2, retries=4)
        # llama.cpp's numbers move by up to ~0.1 nats with what its prompt cache already holds.
        np.testing.assert_allclose(model.query_logprobs([], [], prompts[:3]), direct, atol=0.2)
    finally:
        proxy.close()
    assert proxy.hits == 2 + 1 + 3  # failures, the /models probe, the three answers
    assert model.calls == 3


def test_other_http_errors_are_not_retried(server, task):
    proxy = FlakyProxy(f"http://127.0.0.1:{server.port}", 400, fail=10)
    try:
        with pytest.raises(ServerError, match="HTTP 400: busy"):
            OpenAIModel(proxy.url, fmt=task.fmt, api_key=KEY, retries=4)
    finally:
        proxy.close()
    assert proxy.hits == 1


# -- the command line -------------------------------------------------------------------------
def icm(*args: str, key: str | None = KEY, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k not in API_KEY_VARS}
    if key:
        env["ICM_API_KEY"] = key
    cmd = [sys.executable, "-m", "icm.cli", *args, "--no-progress"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def run_args(base_url: str) -> list[str]:
    data = str(shared("truthfulqa/train.json"))
    return [
        "run",
        "--algorithm",
        "paper",
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--data",
        data,
    ]


def test_cli_run_through_the_server_and_call_cache(server, tmp_path):
    cache = tmp_path / "calls.sqlite"
    args = [*run_args(server.base_url), "--limit", "8", "--iterations", "3"]
    args += ["--concurrency", "2", "--call-cache", str(cache)]
    first = icm(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["examples"] == 8 and summary["iterations"] == 3
    assert summary["model_calls"] > 0 and summary["cached_tokens"] > 0
    labels = (tmp_path / "a" / "labels.jsonl").read_text()
    assert len(labels.splitlines()) == 8
    # The same run again: every answer comes from the call cache, not one request is sent.
    again = icm(*args, "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["model_calls"] == 0
    assert (tmp_path / "b" / "labels.jsonl").read_text() == labels
    # The API key is in no file of the run folders and in no output.
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    for out in (first.stdout, first.stderr, again.stdout, again.stderr):
        assert KEY not in out


def test_cli_without_the_key_fails_cleanly(server, tmp_path):
    args = [*run_args(server.base_url), "--limit", "4", "--out", str(tmp_path / "r")]
    res = icm(*args, key=None)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("icm: ")
    assert "401" in res.stderr and "ICM_API_KEY" in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("key", ["sk-abc\r\nX-Evil: 1", "sk-two words", "sk-naïve"])
def test_an_api_key_that_cannot_go_into_a_header_is_one_line(tmp_path, key):
    """Refused before any request or folder, and the message never shows the key."""
    data = str(Path(__file__).parent / "data" / "bad" / "good.jsonl")
    out = tmp_path / "r"
    args = ["run", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--data", data]
    res = icm(*args, "--out", str(out), key=key)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "$ICM_API_KEY holds a space, a line break" in res.stderr
    assert "sk-" not in res.stderr and not out.exists()


def test_an_example_longer_than_the_servers_context_is_refused_before_the_run(server, tmp_path):
    """The server's tokenizer counts the example and its context length bounds it."""
    data = Path(__file__).parent / "data" / "bad" / "too_long.jsonl"
    out = tmp_path / "r"
    args = ["run", "--algorithm", "paper", "--backend", "openai", "--base-url", server.base_url]
    args += ["--data", str(data)]
    res = icm(*args, "--out", str(out))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "too_long.jsonl: row 2: field 'choice'" in res.stderr and "8192" in res.stderr
    assert not out.exists()


def test_unusable_call_cache_is_a_clean_error(server, task, tmp_path):
    with pytest.raises(IcmError, match="cannot use it as the call cache"):
        client(server, task, call_cache=tmp_path)  # a folder, not a file


def test_server_killed_mid_run_then_resume(tmp_path):
    """Kill the server during a run: retries, a one-line error, exit 2, the checkpoint intact;
    start it again on the same port and `--resume` finishes the run."""
    out = tmp_path / "run"
    srv = LlamaServer(api_key=KEY).start()
    try:
        args = [*run_args(srv.base_url), "--limit", "4", "--iterations", "500"]
        args += ["--retries", "2", "--call-cache", str(tmp_path / "calls.sqlite")]
        proc = icm(*args, "--out", str(out), wait=False)
        chain = out / "batches" / "000" / "chain-0"
        trace = chain / "trace.jsonl"
        deadline = time.monotonic() + 300
        while not (trace.exists() and len(trace.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        srv.kill()
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        err = stderr.decode()
        assert err.count("\n") == 1 and err.startswith("icm: "), err
        assert "3 attempts" in err and "--resume" in err
        state = json.loads((chain / "state.json").read_text())
        rows = [json.loads(line) for line in trace.read_text().splitlines()]
        assert [r["n"] for r in rows] == list(range(1, state["iteration"] + 1))
        assert not (out / "summary.json").exists()
        srv.start()  # the same port, so the same --base-url
        total = state["iteration"] + 2
        res = icm("run", "--resume", str(out), "--iterations", str(total))
        assert res.returncode == 0, res.stderr
    finally:
        srv.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == total
    trace = out / "batches" / "000" / "chain-0" / "trace.jsonl"
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["n"] for r in rows] == list(range(1, total + 1))
    assert len(Path(out / "labels.jsonl").read_text().splitlines()) == 4
