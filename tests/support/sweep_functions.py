"""Objectives for the sweep tests. Tests copy this file next to their sweep file, so that
``objective: functions.py:NAME`` also exercises the resolution against the YAML's folder.

Objectives that log write one JSON line per call to the file named by ``SWEEP_CALL_LOG``
(O_APPEND: lines from concurrent workers do not interleave).
"""

from __future__ import annotations

import json
import math
import os
import time


def _log(**params) -> None:
    path = os.environ.get("SWEEP_CALL_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(params, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)


def branin(x1, x2):
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def logged_branin(x1, x2):
    _log(x1=x1, x2=x2)
    return branin(x1, x2)


def slow_branin(x1, x2):
    _log(x1=x1, x2=x2)
    time.sleep(float(os.environ.get("SWEEP_SLEEP", "0.2")))
    return branin(x1, x2)


def fails_right(x1, x2):
    """Fails on the right half of the domain."""
    if x1 > 2.5:
        raise ValueError(f"x1={x1:.3f} is out of range")
    return branin(x1, x2)


def always_fails(x1, x2):
    raise RuntimeError("broken objective")


def sleeps_when_high(x1, x2):
    """Runs past any short timeout when x1 > 5."""
    if x1 > 5:
        time.sleep(30)
    return branin(x1, x2)


def flaky(x1, x2):
    """Fails on the first call for each point, succeeds on the second (the call log counts)."""
    path = os.environ["SWEEP_CALL_LOG"]
    key = json.dumps({"x1": x1, "x2": x2}, sort_keys=True)
    seen = os.path.exists(path) and key in open(path).read().splitlines()
    _log(x1=x1, x2=x2)
    if not seen:
        raise OSError("transient failure")
    return branin(x1, x2)


def conditional(model, lr, depth=None, kernel=None):
    """A space with conditions: depth only for trees, kernel only for svm."""
    if model == "tree":
        assert kernel is None and depth is not None
        return lr * depth
    assert depth is None and kernel is not None
    return lr * {"rbf": 1.0, "linear": 2.0}[kernel]


def colliding(y, state, value, objective):
    """Parameters named like outputs and meta columns; returns outputs of the same names."""
    return {"y": y * 2, "state": "ok", "loss": y + value, "error": 0, "objective": objective}


def returns_dict(x1, x2):
    return {"loss": branin(x1, x2), "norm": math.hypot(x1, x2)}


def not_a_function():  # placeholder so that a test can point at an attribute that is no function
    return None


NOT_CALLABLE = 42


def crashes_once(x1, x2):
    """The first call with x1 > 2.5 ends the worker process (as a segfault or OOM kill would)."""
    path = os.environ["SWEEP_CALL_LOG"]
    crashed = os.path.exists(path) and "crash" in open(path).read()
    if x1 > 2.5 and not crashed:
        _log(crash=1, x1=x1, x2=x2)
        os._exit(3)
    _log(x1=x1, x2=x2)
    time.sleep(0.3)
    return branin(x1, x2)


def quadratic(x):
    """One minimum at x = 0.3; a little sleep so that both workers take part."""
    time.sleep(0.05)
    return (x - 0.3) ** 2


def zdt_constrained(x1, x2):
    """Two metrics against each other (ZDT1 in two variables) and an output a constraint bounds (mem <= 14
    is x1 <= 0.625 at x2 = 0); ``x2 > 0.9`` leaves ``mem`` out (infeasible: a constrained output missing)."""
    g = 1 + 9 * x2
    out = {"f1": x1, "f2": g * (1 - math.sqrt(x1 / g)), "accuracy": 1 - x1}
    if x2 <= 0.9:
        out["mem"] = 4 + 16 * x1 + 2 * x2
    return out
