"""Replicas behind a real cache-aware router (vllm-router, from PyPI) in front of two real
llama.cpp servers on 127.0.0.1: searches run at once, each stream's requests stay on the
replica that holds its prefix, and the labels equal those of one search after another on one
server."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from icm.cli import main

from .conftest import shared

pytest.importorskip("xllamacpp")
from .server import LlamaServer, Router  # noqa: E402

ROUTER = Path(sys.executable).parent / "vllm-router"
pytestmark = pytest.mark.skipif(not ROUTER.exists(), reason="vllm-router is not installed")


class Tally:
    """A pass-through proxy in front of one server that keeps every completion prompt."""

    def __init__(self, target: str) -> None:
        self.prompts: list[list[int]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def forward(self, body: bytes | None) -> None:
                if body and self.path.endswith("/completions"):
                    with lock:
                        outer.prompts.append(json.loads(body)["prompt"])
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                req = urllib.request.Request(target + self.path, body, headers)
                with urllib.request.urlopen(req, timeout=120) as r:
                    data, status = r.read(), r.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.forward(None)

            def do_POST(self) -> None:
                self.forward(self.rfile.read(int(self.headers["Content-Length"])))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run(base_url: str, out: Path, workers: int) -> list[bool]:
    data = shared("truthfulqa/train.json")
    argv = ["run", "--algorithm", "paper", "--backend", "openai", "--base-url", base_url]
    argv += ["--data", str(data)]
    argv += ["--limit", "8", "--batch-size", "4", "--iterations", "3", "--seed", "2"]
    argv += ["--workers", str(workers), "--concurrency", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return [json.loads(x)["icm_label"] for x in (out / "labels.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_replicas_behind_vllm_router(tmp_path):
    with LlamaServer(parallel=1, ctx=4096, exact=True) as one:
        reference = run(one.base_url, tmp_path / "sequential", workers=1)
    servers = [LlamaServer(parallel=1, ctx=4096, exact=True).start() for _ in range(2)]
    tallies = [Tally(f"http://127.0.0.1:{s.port}") for s in servers]
    try:
        with Router([t.url for t in tallies]) as router:
            labels = run(router.base_url, tmp_path / "fleet", workers=2)
    finally:
        for t in tallies:
            t.close()
        for s in servers:
            s.kill()
    assert labels == reference  # exact servers: the same labels, whatever ran at once
    # Routing by prefix keeps the cache hits of one search on one server.
    shares = [
        json.loads((tmp_path / name / "summary.json").read_text())["cached_share"]
        for name in ("sequential", "fleet")
    ]
    assert shares[1] >= 0.8 * shares[0] > 0
    # Both replicas worked, and a search's requests stay together: prompts that begin alike (a
    # prompt of batch b begins with a claim of batch b) go to one replica. The review after a
    # search (a fresh demonstration order) opens new prefixes the router may place anywhere.
    assert all(t.prompts for t in tallies)
    counts: dict[tuple, list[int]] = {}
    for i, t in enumerate(tallies):
        for p in t.prompts:
            counts.setdefault(tuple(p[:12]), [0, 0])[i] += 1
    together = sum(max(c) for c in counts.values()) / sum(sum(c) for c in counts.values())
    assert together >= 0.75, together
