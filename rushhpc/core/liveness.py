"""Heartbeat settings: how often a worker beats, and how long a silent one lives before it is lost.

Pure (no I/O): the plan, the manager and the worker check the same rule here.
"""

from __future__ import annotations

from rushhpc import defaults
from rushhpc.errors import RushConfigError


def validate_heartbeat(period: float | None, expire: float | None) -> None:
    """Refuse a heartbeat that would declare healthy workers lost.

    Example:
        >>> validate_heartbeat(10, 10)
        Traceback (most recent call last):
        RushConfigError: heartbeat_expire (10 s) must be larger than heartbeat_period (10 s), ...
    """
    if period is not None and period <= 0:
        raise RushConfigError(f"heartbeat_period must be > 0 seconds, got {period}")
    if expire is not None and expire <= 0:
        raise RushConfigError(f"heartbeat_expire must be > 0 seconds, got {expire}")
    p = period if period is not None else defaults.HEARTBEAT_PERIOD
    e = expire if expire is not None else defaults.heartbeat_expire(p)
    if e <= p:
        raise RushConfigError(
            f"heartbeat_expire ({e} s) must be larger than heartbeat_period ({p} s), "
            "ideally 3x or more: a single late beat would declare a healthy worker lost"
        )


def heartbeat_settings(period: float | None, expire: float | None) -> tuple[float, float]:
    """The checked ``(period, expire)`` in seconds; defaults: period 10 s, expire max(60 s, 3 x period).

    Example:
        >>> heartbeat_settings(None, None), heartbeat_settings(30, None)
        ((10.0, 60.0), (30.0, 90.0))
    """
    validate_heartbeat(period, expire)
    p = float(period) if period is not None else defaults.HEARTBEAT_PERIOD
    e = float(expire) if expire is not None else defaults.heartbeat_expire(p)
    return p, e
