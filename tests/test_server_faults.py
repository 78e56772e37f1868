"""A server that answers badly: one line, never a traceback, never a cached bad answer.

No real server can be made to send NaN log-probs or an empty list on demand, so these cases use
a small HTTP server in the test process that answers what each case needs; the real llama.cpp
server is exercised in test_openai_backend.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from icm.backends.openai import OpenAIModel
from icm.cli import main
from icm.core.data import PromptFormat
from icm.errors import ServerError

KEY = "sk-test-0123456789abcdef"


class Faulty:
    """An OpenAI-style server whose /v1/models and /v1/completions answers are set per test."""

    def __init__(self) -> None:
        self.models: object = {"data": [{"id": "m", "meta": {"n_ctx": 4096, "size": 1}}]}
        self.completion: bytes = self.good()
        self.status = 200
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, json.dumps(outer.models).encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/completions"):
                    outer.requests += 1
                    self._send(outer.status, outer.completion)
                else:
                    self._send(404, b'{"error": {"message": "no such endpoint"}}')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def good(true: float = -0.2, false: float = -1.8, usage: object = 10) -> bytes:
        body = {
            "choices": [{"logprobs": {"top_logprobs": [{" True": true, " False": false}]}}],
            "usage": {"prompt_tokens": usage},
        }
        return json.dumps(body).encode()

    def client(self, **kw) -> OpenAIModel:
        return OpenAIModel(self.url, "m", fmt=PromptFormat(), retries=1, timeout=5, **kw)


@pytest.fixture
def server():
    s = Faulty()
    yield s
    s.httpd.shutdown()


BAD_ANSWERS = {
    "NaN log-prob": b'{"choices": [{"logprobs": {"top_logprobs": [{" True": NaN}]}}]}',
    "infinite log-prob": b'{"choices": [{"logprobs": {"top_logprobs": [{" True": -Infinity}]}}]}',
    "text log-prob": b'{"choices": [{"logprobs": {"top_logprobs": [{" True": "high"}]}}]}',
    "positive log-prob": b'{"choices": [{"logprobs": {"top_logprobs": [{" True": 3.5}]}}]}',
    "empty list": b"[]",
    "not JSON": b"<html>busy</html>",
    "no choices": b'{"choices": []}',
}


@pytest.mark.parametrize("name", list(BAD_ANSWERS))
def test_a_bad_answer_is_one_line_and_never_cached(name, server, tmp_path):
    server.completion = BAD_ANSWERS[name]
    cache = tmp_path / "calls.sqlite"
    model = server.client(call_cache=cache)
    with pytest.raises(ServerError) as e:
        model.query_logprobs([], [], ["Is this a claim?"])
    assert "\n" not in str(e.value)
    model.close()
    server.completion = server.good()
    again = server.client(call_cache=cache)
    before = server.requests
    again.query_logprobs([], [], ["Is this a claim?"])
    assert again.cache_hits == 0 and server.requests == before + 1  # asked, not read back


def test_a_usage_field_that_is_no_count_is_ignored(server):
    server.completion = server.good(usage="12.5")
    model = server.client()
    lp = model.query_logprobs([], [], ["a claim"])
    assert lp.shape == (1, 2) and model.tokens == 0 and model.calls == 1


@pytest.mark.parametrize("ctx", ["8k", -1, 2.5, True])
def test_a_context_length_that_is_no_number_is_refused(ctx, server):
    server.models = {"data": [{"id": "m", "max_model_len": ctx}]}
    with pytest.raises(ServerError, match="not a number of tokens"):
        server.client()


def test_a_models_answer_that_is_a_list_is_refused(server):
    server.models = []
    with pytest.raises(ServerError):
        server.client()


def test_an_echoed_key_is_redacted(server):
    server.status = 400
    server.completion = json.dumps(
        {"error": {"message": f"bad request from Authorization: Bearer {KEY} (key {KEY})"}}
    ).encode()
    model = server.client(api_key=KEY)
    with pytest.raises(ServerError) as e:
        model.query_logprobs([], [], ["claim"])
    assert KEY not in str(e.value) and "***" in str(e.value)


def test_a_new_checkpoint_under_the_old_name_is_not_answered_from_the_cache(server, tmp_path):
    cache = tmp_path / "calls.sqlite"
    first = server.client(call_cache=cache)
    first.query_logprobs([], [], ["claim"])
    first.close()
    same = server.client(call_cache=cache)
    same.query_logprobs([], [], ["claim"])
    assert same.cache_hits == 1
    same.close()
    server.models = {"data": [{"id": "m", "meta": {"n_ctx": 4096, "size": 2}}]}  # new weights
    new = server.client(call_cache=cache)
    new.query_logprobs([], [], ["claim"])
    assert new.cache_hits == 0


def test_the_command_line_reports_a_bad_server_in_one_line(server, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"question": "q", "choice": f"a{k}", "consistency_id": 0} for k in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.completion = BAD_ANSWERS["NaN log-prob"]
    argv = ["run", "--algorithm", "paper", "--backend", "openai", "--base-url", server.url]
    argv += ["--data", str(data)]
    assert main([*argv, "--out", str(tmp_path / "r"), "--retries", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("icm: ") and "Traceback" not in err


def test_scores_with_one_label_in_the_top_k_are_counted_and_warned(server, tmp_path, capsys):
    """A server with no /tokenize cannot be asked for the missing label by name: every score
    keeps the bound, and the run says so."""
    data = tmp_path / "d.jsonl"
    rows = [{"question": "q", "choice": f"a{k}", "consistency_id": k // 2} for k in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.completion = json.dumps(
        {"choices": [{"logprobs": {"top_logprobs": [{" True": -0.4, " maybe": -1.5}]}}]}
    ).encode()
    out = tmp_path / "r"
    argv = ["run", "--algorithm", "paper", "--backend", "openai", "--base-url", server.url]
    argv += ["--data", str(data), "--out", str(out), "--no-progress", "--iterations", "3"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"] > 0 and summary["approximate_scores"] == summary["scores"]
    assert summary["approximate_share"] == 1.0
    assert any(w.startswith("approximate: ") for w in summary["warnings"])
    assert "approximate: " in capsys.readouterr().err
    # A search resumed from its checkpoint keeps counting from what it had counted.
    final = json.loads(next(out.glob("**/final.json")).read_text())
    assert final["approximate_scores"] == final["scores"] > 0


def test_a_good_server_has_no_approximate_scores(server):
    model = server.client()
    model.query_logprobs([], [], ["a claim", "another claim"])
    assert (model.scores, model.approximate_scores) == (2, 0)
