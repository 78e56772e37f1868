"""A real llama.cpp server (xllamacpp) on 127.0.0.1 serving the embedded default model's GGUF.

It runs in its own process, so a test can kill it as a crash would, and start it again on the
same port. Run this file to start one by hand: `python tests/server.py --port 8080`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`start()` launches the server and waits until it answers; `kill()` ends it at once."""

    def __init__(
        self,
        port: int | None = None,
        parallel: int = 4,
        ctx: int = 8192,
        api_key: str | None = None,
        threads: int = 1,
        exact: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.parallel, self.ctx, self.api_key, self.threads = parallel, ctx, api_key, threads
        self.exact = exact
        self.log = Path(tempfile.mkdtemp(prefix="icm-server-")) / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: float = 90.0) -> LlamaServer:
        cmd = [sys.executable, __file__, "--port", str(self.port)]
        cmd += ["--parallel", str(self.parallel), "--ctx", str(self.ctx)]
        cmd += ["--threads", str(self.threads)] + (["--exact"] if self.exact else [])
        self.log.parent.mkdir(exist_ok=True)
        env = dict(os.environ)
        if self.api_key:
            env["LLAMA_TEST_API_KEY"] = self.api_key  # not on the command line, as a user would
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        tail = self.log.read_text()[-2000:]
        self.kill()
        raise RuntimeError(f"server did not answer in {wait} s: {tail}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def serve(port: int, parallel: int, ctx: int, threads: int, exact: bool = False) -> None:
    """The server process: by default one CPU thread (the machine is shared); prompt caching
    is on, as in llama-server. `exact`: the same log-probs whatever was cached or ran beside a
    request (separate slot caches, no flash attention; measured bit-identical except when a
    prompt's last token is all that is left to compute, which icm's requests avoid)."""
    import xllamacpp

    from icm.backends.loading import default_gguf

    p = xllamacpp.CommonParams()
    p.model.path = str(default_gguf())
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = ctx
    p.n_parallel = parallel
    p.kv_unified = not exact  # otherwise the slots share one context of `ctx` tokens
    if exact:
        p.flash_attn_type = 0
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    if os.environ.get("LLAMA_TEST_API_KEY"):
        p.api_keys = [os.environ["LLAMA_TEST_API_KEY"]]
    server = xllamacpp.Server(p)  # serves on its own threads until this process ends
    while server:
        time.sleep(3600)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exact", action="store_true")
    a = ap.parse_args()
    serve(a.port, a.parallel, a.ctx, a.threads, a.exact)


class Router:
    """vllm-router (a cache-aware router from PyPI) in front of servers on 127.0.0.1."""

    def __init__(self, workers: list[str]) -> None:
        self.workers = workers
        self.port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="icm-router-")) / "router.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: float = 60.0) -> Router:
        exe = shutil.which("vllm-router", path=str(Path(sys.executable).parent))
        if exe is None:
            raise RuntimeError("vllm-router is not installed (pip install vllm-router)")
        cmd = [exe, "--host", "127.0.0.1", "--port", str(self.port), "--policy", "cache_aware"]
        cmd += ["--prometheus-port", str(free_port()), "--worker-urls", *self.workers]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if json.loads(r.read()).get("data"):
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        tail = self.log.read_text()[-2000:]
        self.kill()
        raise RuntimeError(f"router did not answer in {wait} s: {tail}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
