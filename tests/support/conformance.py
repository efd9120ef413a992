"""Worker loops and helpers of the conformance suite: the Python counterparts of the loops in rush's
tests/testthat/helper.R (mlr-org/rush), written for rushhpc's API.

Workers cannot import a test module, so this module's functions travel by value (cloudpickle).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, Iterator

import cloudpickle

import rushhpc
from rushhpc import rush_plan

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# A short heartbeat, so that a dead script worker is found in seconds, not in a minute.
HB: dict[str, float] = {"heartbeat_period": 0.5, "heartbeat_expire": 2}


def add(x1: float, x2: float, **_: Any) -> dict[str, float]:
    """The objective of rush's test loops: y = x1 + x2."""
    return {"y": x1 + x2}


def propose_loop(rush: Any) -> None:
    """Creates and finishes its own tasks, one every 0.1 s, until stopped (rush's wl_default)."""
    while not rush.terminated:
        xs = {"x1": random.uniform(0, 10), "x2": random.uniform(0, 10)}
        keys = rush.push_running_tasks([xs])
        rush.finish_tasks(keys, [{"y": xs["x1"] + xs["x2"]}])
        time.sleep(0.1)


def fail_small_loop(rush: Any) -> None:
    """Pops tasks; fails those with x1 < 1 with the condition "Test error", finishes the others (wl_fail)."""
    while not rush.terminated:
        task = rush.pop_task(timeout=0.2)
        if task is None:
            continue
        if task["xs"]["x1"] < 1:
            rush.fail_tasks([task["key"]], [{"message": "Test error"}])
        else:
            rush.finish_tasks([task["key"]], [add(**task["xs"])])


def crash_loop(rush: Any) -> None:
    """Holds one running task, then dies by SIGKILL as a segfault would (wl_segfault)."""
    rush.push_running_tasks([{"x1": 1, "x2": 2}])
    rush.n_running_tasks  # noqa: B018 - a read: the deferred push above has reached Redis
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


def big_stderr_loop(rush: Any) -> None:
    """Writes 1 MB to stderr (more than a pipe holds), then finishes a task (wl_big_stderr)."""
    keys = rush.push_running_tasks([{"x1": 1, "x2": 2}])
    sys.stderr.write("x" * 1_000_000 + "\n")
    sys.stderr.flush()
    rush.finish_tasks(keys, [{"y": 3}])


def idle_loop(rush: Any) -> None:
    """Does nothing until stopped (wl_nop)."""
    while not rush.terminated:
        time.sleep(0.05)


def hold_task_loop(rush: Any) -> None:
    """Pops one task and keeps it running for ten minutes, looking at nothing (wl_sleep)."""
    rush.pop_task(timeout=10)
    time.sleep(600)


def network_keys(rush: Any) -> list[str]:
    """Every Redis key of the network of ``rush`` (a manager or a worker)."""
    return sorted(rush.connector.scan_iter(match=rush.keys.pattern))


@contextlib.contextmanager
def planned_manager(config: Any, **plan: Any) -> Iterator[rushhpc.Rush]:
    """A manager of a new network made after ``rush_plan(config=config, **plan)``; reset and closed after."""
    rush_plan(config=config, **plan)
    manager = rushhpc.rsh("conf-" + uuid.uuid4().hex[:10])
    try:
        yield manager
    finally:
        manager.reset()
        manager.close()


@contextlib.contextmanager
def script_workers(command: str, n: int, log_dir: Any) -> Iterator[list[subprocess.Popen]]:
    """Run the printed worker command ``n`` times as real shell processes; kill what is left at the end."""
    procs = []
    try:
        for i in range(n):
            with open(os.path.join(str(log_dir), f"script-{i}.err"), "w") as err:
                procs.append(subprocess.Popen(command, shell=True, start_new_session=True, stderr=err))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def debug_once_loop(rush: Any) -> None:
    """Sends one debug record naming itself, then idles until stopped."""
    import logging

    logging.getLogger("rushhpc.conformance").debug("worker %s started", rush.worker_id)
    idle_loop(rush)
