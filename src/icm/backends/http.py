"""A small JSON-over-HTTP client for inference servers: keep-alive connections per thread, retries
with backoff on busy answers and dropped connections, one-line errors with the API key redacted.

The standard library's `http.client` is enough for this, so the server backend adds no dependency.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import socket
import threading
from urllib.parse import urlsplit

from .. import files
from ..errors import ConfigError, ContextLengthError, ModelError, ServerError, Stopped
from .options import check_base_url

API_KEY_VARS = ("ICM_API_KEY", "OPENAI_API_KEY")
"""Where the API key is read from, in this order. It is never stored in the run folder."""
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_DELAY = 30.0


def api_key_from_env() -> str | None:
    """The API key, checked: it goes into an HTTP header, where a line break or another
    control character would be refused mid-request (the error never shows the key)."""
    for var in API_KEY_VARS:
        key = os.environ.get(var)
        if key:
            if not re.fullmatch(r"[\x21-\x7e]+", key):
                raise ConfigError(
                    f"${var} holds a space, a line break or a character outside printable "
                    "ASCII; an API key goes into an HTTP header as it is"
                )
            return key
    return None


def redact(text: str, secret: str | None) -> str:
    """A server's error text with the API key, and any bearer token, blanked out."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


def error_text(data: bytes) -> str:
    """The server's error message on one line (OpenAI layout `{"error": {"message"}}` or text)."""
    try:
        err = json.loads(data).get("error", {})
        msg = err.get("message", err) if isinstance(err, dict) else err
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        msg = data.decode("utf-8", "replace")
    return " ".join(str(msg).split())[:300] or "(empty body)"


class Abort(threading.Event):
    """Set when a request of a batch fails for good; keeps that first error."""

    error: ModelError | None = None

    def fail(self, error: ModelError) -> ModelError:
        if not self.is_set():
            self.error = error
            self.set()
        return error


def json_object(data: bytes) -> tuple[dict | None, str]:
    """A 200 answer's JSON object, or None and why it is not one (a retry may do better)."""
    try:
        answer = files.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # NaN too: not JSON
        return None, f"an answer that is not strict JSON ({e}): {data[:120]!r}"
    if isinstance(answer, dict):
        return answer, ""
    return None, f"an answer that is not a JSON object: {data[:120]!r}"


def refusal(url: str, status: int, why: str) -> ServerError | ContextLengthError:
    """The one-line error of an answer that no retry changes."""
    if status in (401, 403):
        why += f" (set the API key in ${API_KEY_VARS[0]} or ${API_KEY_VARS[1]})"
    if status == 400 and "context" in why.lower():
        return ContextLengthError(
            f"{url}: {why}: use fewer examples per batch or a longer server context"
        )
    return ServerError(f"{url}: {why}", status=status)


class Client:
    """JSON requests to one server. `base` is the API path (`/v1` when the URL has none)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int) -> None:
        try:
            check_base_url(base_url)
        except ConfigError as e:
            raise ServerError(str(e)) from e
        parts = urlsplit(base_url.rstrip("/"))
        host = parts.hostname
        assert host is not None  # check_base_url refuses a URL without a host
        self.scheme, self.host, self.port = parts.scheme, host, parts.port
        self.base = parts.path or "/v1"
        self.netloc = parts.netloc
        self.url = f"{parts.scheme}://{parts.netloc}{self.base}"
        self.timeout, self.retries = timeout, retries
        self.secret = api_key
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        """One keep-alive connection per thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = self._local.conn = cls(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _exchange(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole answer within `timeout` seconds, connecting, sending and
        reading together: a server that drip-feeds its answer is cut off at the deadline (the
        socket's own timeout only bounds each wait for a byte)."""
        cut = threading.Event()
        held: list[socket.socket | None] = [None]  # the response may outlive conn.sock

        def expire() -> None:
            cut.set()
            sock = held[0] or conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the read below

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.request(method, path, body=body, headers=self.headers)
            held[0] = conn.sock
            if cut.is_set():
                raise TimeoutError(f"no whole answer within {self.timeout:g} s")
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            if cut.is_set():
                raise TimeoutError(f"no whole answer within {self.timeout:g} s") from e
            raise
        finally:
            timer.cancel()
        if cut.is_set():
            raise TimeoutError(f"no whole answer within {self.timeout:g} s")
        return resp, data

    def call(
        self,
        method: str,
        endpoint: str,
        payload: dict | None = None,
        abort: Abort | None = None,
        root: bool = False,
    ) -> dict:
        """One request to `base + endpoint` (`endpoint` alone with `root`), with retries
        (exponential backoff with jitter, or the server's Retry-After) on 429, 5xx, timeouts,
        dropped connections and answers that are not a strict JSON object; any other failure,
        or the last retry's, is a one-line ServerError. Once a request of the batch has failed
        for good (`abort`), the others stop retrying."""
        abort = abort or Abort()
        path = endpoint if root else self.base + endpoint
        url = f"{self.scheme}://{self.netloc}{path}"
        body = json.dumps(payload).encode() if payload is not None else None
        why, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                backoff = min(MAX_DELAY, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if abort.wait(max(backoff, wait)):
                    raise Stopped()
            try:
                resp, data = self._exchange(self._connection(), method, path, body)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out
                self._drop_connection()
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if resp.status == 200:
                answer, why = json_object(data)
                if answer is not None:
                    return answer
                continue
            why = f"HTTP {resp.status}: {redact(error_text(data), self.secret)}"
            if resp.status in RETRY_STATUS:
                after = resp.getheader("Retry-After", "")
                wait = min(MAX_DELAY, float(after)) if after.replace(".", "", 1).isdigit() else 0.0
                continue
            raise abort.fail(refusal(url, resp.status, why))
        why = redact(why, self.secret)
        raise abort.fail(
            ServerError(
                f"{url}: no usable answer after {self.retries + 1} attempts ({why}); a run keeps "
                "its last complete iteration: start the server again and continue with "
                "`icm run --resume`"
            )
        )
