"""A small exception hierarchy: every error a user can cause is an IcmError with a one-line message.

The CLI prints `icm: <message>` and exits with code 2; the original exception stays in `__cause__`.
"""

import re
import shlex
import sys

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""What a terminal acts on instead of showing: C0 and C1 control characters (escape sequences
start with one), DEL, and the bidirectional overrides that reorder what is shown."""


def printable(text: str, lines: bool = False) -> str:
    """`text` safe to print: every control character shown as an escape (\\x1b, \\u202e),
    newlines too unless `lines`. Error bodies, field names and claims come from data or from
    servers, and must not drive the terminal."""

    def escape(m: re.Match[str]) -> str:
        c = m.group()
        if lines and c == "\n":
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _CONTROL.sub(escape, text)


def pip_hint(*packages: str) -> str:
    """The command that installs `packages` into the environment running icm (a bare `pip` may
    belong to another one when the virtual environment is not activated)."""
    return shlex.join([sys.executable, "-m", "pip", "install", *packages])


class IcmError(Exception):
    """Base class of every error icm raises on purpose."""


class ConfigError(IcmError):
    """An option out of its range or not one of its choices: the message names the option."""


class DataError(IcmError):
    """Bad input data: the message names the file, the row and the field."""


class ModelError(IcmError):
    """The model could not be loaded or could not score a prompt."""


class ContextLengthError(ModelError):
    """A prompt is longer than the model's context."""


class ServerError(ModelError):
    """A completion server failed after its retries; `status` is its last HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunError(IcmError):
    """A run folder cannot be created, read or resumed."""


class LinkError(IcmError):
    """A symbolic link icm did not make stands where icm would write: refused, never followed."""


class Stopped(Exception):  # noqa: N818 - a signal, not an error a user sees
    """Work gave up at a safe point because other work it belongs with failed or was
    interrupted (a request of a batch, a search of a run); the first failure is what is raised."""
