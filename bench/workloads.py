"""What the benchmarked workers run: the no-op objective, a timed sleep, and the
propose/evaluate/report worker loop.

rushhpc workers cannot import this file (they start in another directory), so
`rushhpc_loops` registers the module with cloudpickle to send its functions
by value. The peers run the same objectives from `peer_jobs.py`.
"""

from __future__ import annotations

import random
import sys
import time


def noop(**xs) -> dict:
    """The no-op objective: returns a constant at once."""
    return {"y": 0.0}


def timed_sleep(seconds: float):
    """An objective that takes ``seconds`` (time.sleep) and reports how long it
    really took as ``t_obj``, the numerator of the utilisation."""

    def objective(**xs) -> dict:
        t = time.perf_counter()
        time.sleep(seconds)
        return {"y": 0.0, "t_obj": time.perf_counter() - t}

    return objective


def propose_loop(rush, objective=noop) -> None:
    """The propose/evaluate/report loop of rush's vignette (random search):
    propose a point, register it as running, evaluate, report, until terminated."""
    while not rush.terminated:
        xs = {"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)}
        keys = rush.push_running_tasks([xs])
        rush.finish_tasks(keys, [objective(**xs)])


def random_xs(n: int) -> list[dict]:
    """``n`` random points of the search space used by every loop."""
    return [{"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)} for _ in range(n)]


def rushhpc_loops():
    """Make this module's functions picklable by value for rushhpc worker processes."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
