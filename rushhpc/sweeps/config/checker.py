"""The checks every section of a sweep file uses: each returns the value or raises a `SweepConfigError`
naming the file, the key path and what was expected (``sweep.yaml: workers.n: expected a positive integer, got 0``)."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from rushhpc.core.durations import DurationError, parse_duration
from rushhpc.sweeps.config.schema import SweepConfigError, fmt

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def number(value: Any) -> float | int | None:
    """An int or float; a numeric string (YAML reads 1e-4 as a string) is accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return int(f) if _INT_TEXT.fullmatch(value) else f
    return None


def int_like(value: Any) -> Any:
    """``"10"`` -> 10 (other values unchanged, so that an error shows them as written)."""
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return value


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


class Checker:
    """Checks of one sweep file (``source`` names it in every message).

    Example:
        >>> Checker("sweep.yaml").int_("workers.n", 0, minimum=1)
        Traceback (most recent call last):
        rushhpc.sweeps.config.schema.SweepConfigError: sweep.yaml: workers.n: expected a positive integer, got 0
    """

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: Any = ...) -> SweepConfigError:
        msg = f"{self.source}: {path}: {expected}"
        if got is not ...:
            msg += f", got {fmt(got)}"
        return SweepConfigError(msg)

    def mapping(self, path: str, value: Any, allowed: Sequence[str], what: str = "a mapping") -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected {what}", value)
        for k in value:
            if not isinstance(k, str):
                raise self.fail(path, "keys must be strings", k)
            if k not in allowed:
                where = f"{path}.{k}" if path else k
                raise self.fail(where, f"unknown key; {path or 'the sweep file'} takes {', '.join(allowed)}")
        return value

    def int_(self, path: str, value: Any, minimum: int | None = None, or_null: bool = False) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
                minimum, f"an integer >= {minimum}")
            raise self.fail(path, f"expected {what}" + (" or null" if or_null else ""), value)
        return value

    def opt_int(self, path: str, value: Any, minimum: int | None = None) -> int | None:
        return None if value is None else self.int_(path, value, minimum, or_null=True)

    def float_(self, path: str, value: Any, positive: bool = False, or_null: bool = False) -> float:
        v = number(value)
        if v is None or not math.isfinite(float(v)) or (positive and v <= 0):
            raise self.fail(path, "expected " + ("a positive number" if positive else "a finite number")
                            + (" or null" if or_null else ""), value)
        return float(v)

    def opt_float(self, path: str, value: Any, positive: bool = False) -> float | None:
        return None if value is None else self.float_(path, value, positive, or_null=True)

    def bool_(self, path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false", value)
        return value

    def duration(self, path: str, value: Any, positive: bool = True) -> float:
        try:
            secs = parse_duration(value)
        except DurationError as e:
            raise self.fail(path, str(e), value) from None
        if positive and secs <= 0:
            raise self.fail(path, "expected a duration > 0", value)
        return secs

    def opt_duration(self, path: str, value: Any) -> float | None:
        return None if value is None else self.duration(path, value)

    def choice(self, path: str, value: Any, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}", value)
        return str(value)

    def string(self, path: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "expected a non-empty string", value)
        return value
