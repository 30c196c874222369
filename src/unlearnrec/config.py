"""Frozen-dataclass configs loaded from TOML; unknown keys and wrong types are rejected."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from unlearnrec.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds both accept 0..2**32-1


class RangeError(ConfigError):
    """A config value outside its valid range; ``key`` names the field."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key} {message}")
        self.key = key
        self.message = message


@dataclasses.dataclass(frozen=True)
class Interval:
    """A closed/open interval of valid values, parsed from text like ``"(0, 1]"`` or ``">= 1"``."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Interval:
        t = text.replace(" ", "")
        for op, kw in ((">=", {}), (">", {"lo_open": True})):
            if t.startswith(op):
                return cls(lo=float(t[len(op) :]), **kw)
        for op, kw in (("<=", {}), ("<", {"hi_open": True})):
            if t.startswith(op):
                return cls(hi=float(t[len(op) :]), **kw)
        if t[0] not in "[(" or t[-1] not in "])" or "," not in t:
            raise ValueError(f"bad interval {text!r}")
        lo, hi = t[1:-1].split(",")
        return cls(float(lo), float(hi), t[0] == "(", t[-1] == ")")

    def __contains__(self, v: float) -> bool:
        lo_ok = v > self.lo if self.lo_open else v >= self.lo
        hi_ok = v < self.hi if self.hi_open else v <= self.hi
        return lo_ok and hi_ok

    def __str__(self) -> str:
        def num(x: float) -> str:
            return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"

        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        if self.lo == -math.inf:
            return f"{'<' if self.hi_open else '<='} {num(self.hi)}"
        return (
            f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        )


def check_value(key: str, value: Any, interval: str | Interval) -> None:
    """Raise :class:`RangeError` unless ``value`` is a finite number within ``interval``."""
    iv = interval if isinstance(interval, Interval) else Interval.parse(interval)
    if isinstance(value, float) and not math.isfinite(value):
        raise RangeError(key, f"must be a finite number {iv}, got {value}")
    if value not in iv:
        raise RangeError(key, f"must be {iv}, got {value}")


def check_ranges(obj: Any) -> None:
    """Check a config dataclass against its class attribute ``RANGES`` ({field: interval text}).

    Every float field must be finite (NaN and inf are never a valid setting); a ``None`` value
    (an unset optional) and the members of a tuple field are checked against the field's interval.
    Called by the configs' ``__post_init__``, so a config built in Python or read from TOML (via
    :func:`from_dict`, which adds the section to the key) is checked the same way.
    """
    spec: dict[str, str] = getattr(type(obj), "RANGES", {})
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        values = v if isinstance(v, tuple) else (v,)
        for x in values:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if f.name in spec:
                check_value(f.name, x, spec[f.name])
            elif isinstance(x, float) and not math.isfinite(x):
                raise RangeError(f.name, f"must be a finite number, got {x}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_check(v, inner, f"{where}[{k}]") for k, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (valid: {', '.join(sorted(fields))})")
    kwargs = {k: _check(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except RangeError as e:
        raise ConfigError(f"{prefix}{e.key} {e.message}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a (nested) config dataclass."""
    d = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def override(obj: T, **changes: Any) -> T:
    """A copy of the config with the non-None ``changes`` applied (type-checked)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return obj
    return from_dict(type(obj), {**to_dict(obj), **changes})
