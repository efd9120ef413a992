"""The one duration parser: every walltime, timeout and budget in rushhpc goes through it.

The rule (docs/api.md, "Durations"):

- a number (``int`` or ``float``, as Python or YAML writes it) is **seconds**;
- a string carries its unit: ``"90s"``, ``"10m"`` (or ``"10min"``), ``"1h30m"``, ``"1.5h"``, ``"2d"``;
- or a clock form as SLURM and PBS write it: ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``,
  ``"D-HH:MM:SS"``;
- a string of digits alone (``"90"``) is refused: ``sbatch --time=90`` reads it as minutes, a Python timeout
  as seconds, and guessing wrong kills a job 60 times too early or too late. The error names both spellings.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["parse_duration", "DurationError"]

_NUM = r"(\d+(?:\.\d*)?)"
_UNITS = re.compile(rf"^(?:{_NUM}d)?(?:{_NUM}h)?(?:{_NUM}m(?:in)?)?(?:{_NUM}s)?$")
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+(?::\d+){0,2})$")

_FORMS = "a number of seconds (90), a unit (90s, 10m, 1h30m, 2d) or a clock (01:30:00, 1-00:00:00)"


class DurationError(ValueError):
    """A value that is not a duration; the message says which forms are accepted."""


def parse_duration(value: Any) -> float:
    """Seconds from a duration written by the one rule of this module; ``None`` and ``""`` are refused.

    Example:
        >>> parse_duration(90), parse_duration("1h30m"), parse_duration("01:30:00"), parse_duration("1-02")
        (90.0, 5400.0, 5400.0, 93600.0)
        >>> parse_duration("90")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rushhpc.core.durations.DurationError: '90' has no unit: write 90s for seconds or 90m for minutes ...
    """
    if isinstance(value, bool):
        raise DurationError(f"{value!r} is not a duration: expected {_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise DurationError(f"{value!r}: a duration must be a finite number of seconds >= 0")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise DurationError(f"{value!r} is not a duration: expected {_FORMS}")
    text = "".join(value.split()).lower()
    if re.fullmatch(r"\d+(?:\.\d*)?", text):
        raise DurationError(f"{value!r} has no unit: write {text}s for seconds or {text}m for minutes "
                            "(sbatch's --time=" + text + " means minutes)")
    m = _UNITS.match(text)
    if m and any(m.groups()):
        d, h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
        return d * 86400 + h * 3600 + mi * 60 + sec
    c = _CLOCK.match(text)
    if c and (c.group(1) is not None or ":" in c.group(2)):
        days = int(c.group(1) or 0)
        parts = [int(p) for p in c.group(2).split(":")]
        if c.group(1) is not None:  # D-HH, D-HH:MM, D-HH:MM:SS: hours first
            parts += [0] * (3 - len(parts))
        elif len(parts) == 2:  # MM:SS
            parts = [0, *parts]
        h, mi, sec = parts
        return float(days * 86400 + h * 3600 + mi * 60 + sec)
    raise DurationError(f"{value!r} is not a duration: expected {_FORMS}")
