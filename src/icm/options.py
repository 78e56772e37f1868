"""Options as dataclass fields: the help text is the CLI help, the bounds are checked up front.

A field's metadata holds `help` and, where it applies, `choices`, `min`, `max` (inclusive) or
`above` (exclusive), and `resumable` for an option that may change on `--resume`. `check(obj)`
checks every field of a config before anything is written, so a bad option is one line naming
the option, never a NaN score at the end of a run or a traceback.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ConfigError

SEED_MAX = 2**63 - 1


def option(default: Any = None, help: str = "", **bounds: Any) -> Any:
    """A dataclass field with its help text and bounds (`choices`, `min`, `max`, `above`)."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **bounds}
        )
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def kind(f: dataclasses.Field) -> str:
    """'int', 'float', 'bool', 'str' or 'list' from a field's annotation (string annotations)."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    for k in ("bool", "int", "float", "list"):
        if t.startswith(k):
            return k
    return "str"


def optional(f: dataclasses.Field) -> bool:
    t = f.type if isinstance(f.type, str) else str(f.type)
    return "None" in t


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def resumable(*classes: type) -> set[str]:
    """Names of the fields marked `resumable=True`: they may change on `--resume`."""
    return {f.name for c in classes for f in dataclasses.fields(c) if f.metadata.get("resumable")}


def check_value(f: dataclasses.Field, v: object, where: str = "") -> None:
    """One field's value against its annotation and bounds; a ConfigError names the option."""
    name = where + flag(f.name)
    if v is None:
        if optional(f):
            return
        raise ConfigError(f"{name} must be set")
    k, meta = kind(f), f.metadata
    if k == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{name} must be true or false, got {_short(v)}")
        return
    if k == "list":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{name} must be a list of text, got {_short(v)}")
        return
    if k == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{name} must be text, got {_short(v)}")
        if "choices" in meta and v not in meta["choices"]:
            raise ConfigError(
                f"{name}: {_short(v)} is not one of the choices: {', '.join(meta['choices'])}"
            )
        return
    number = int if k == "int" else int | float
    if isinstance(v, bool) or not isinstance(v, number):
        what = "an integer" if k == "int" else "a number"
        raise ConfigError(f"{name} must be {what}, got {_short(v)}")
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")
    lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
    if lo is not None and v < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {_short(v)}")
    if above is not None and v <= above:
        raise ConfigError(f"{name} must be above {above}, got {_short(v)}")
    if hi is not None and v > hi:
        raise ConfigError(f"{name} must be at most {hi}, got {_short(v)}")


def check(obj: object, where: str = "") -> None:
    """Every field of the dataclass `obj` (nested dataclasses too)."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            check(v, where)
        elif f.metadata:
            check_value(f, v, where)


def from_json(cls: type, d: object, source: str) -> Any:
    """A config dataclass from its JSON form, every field checked; unknown keys are an error."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(sorted(unknown))}")
    kw = {}
    for name, value in d.items():
        nested = fields[name].default_factory  # type: ignore[misc]
        if nested is not dataclasses.MISSING and dataclasses.is_dataclass(nested):
            value = from_json(nested, value, f"{source}: {name}")
        kw[name] = value
    obj = cls(**kw)
    try:
        check(obj)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return obj


def options_of(cls: type, cfg: object) -> Any:
    """The `cls` options (one of the dataclasses a config inherits) that `cfg` holds."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})
