"""Conformance: rush's tests/testthat/test-rush_plan.R, written fresh for rushhpc's plan functions.
Each test names the R test it mirrors; deliberate differences are in docs/from-r.md."""

from __future__ import annotations

import time
import uuid

import pytest
from support import free_port, wait_until
from support.conformance import HB, add, debug_once_loop

from rushhpc import (
    RushConfigError,
    RushTimeoutError,
    queue_loop,
    remove_rush_plan,
    rsh,
    rush_available,
    rush_config,
    rush_plan,
)


def _manager():
    return rsh("conf-" + uuid.uuid4().hex[:10])


# test-rush_plan.R: "rush_plan family works"
def test_the_plan_functions(config):
    remove_rush_plan()
    assert not rush_available() and rush_config() == {}
    rush_plan(n_workers=2, config=config)
    assert rush_config()["config"].url() == config.url()
    assert rush_config()["n_workers"] == 2
    assert rush_available()
    remove_rush_plan()
    assert not rush_available()


# test-rush_plan.R: "start_worker_timeout is stored and used as default"
def test_start_worker_timeout_is_the_default_wait(config):
    rush_plan(n_workers=2, config=config, start_worker_timeout=0.1)
    assert rush_config()["start_worker_timeout"] == 0.1
    rush = _manager()
    try:
        t0 = time.monotonic()
        with pytest.raises(RushTimeoutError, match="within 0.1 s"):
            rush.wait_for_workers(1)
        assert time.monotonic() - t0 < 5
        with pytest.raises(RushTimeoutError):
            rush.wait_for_workers(1, timeout=0.1)
    finally:
        rush.reset()
        rush.close()


# test-rush_plan.R: "rush_plan throws and error if redis is not available"
def test_an_unreachable_redis_is_reported_by_rsh(config):
    port = free_port()  # nothing listens there
    # deliberate difference: the plan only describes; the first manager made from it connects and says why not
    rush_plan(n_workers=2, config=f"redis://127.0.0.1:{port}")
    with pytest.raises(RushConfigError, match=f"127.0.0.1:{port}"):
        _manager()


# test-rush_plan.R: "start workers"
def test_start_workers_follows_the_plan(config):
    rush_plan(n_workers=1, config=config, **HB)
    assert rush_config()["n_workers"] == 1
    rush = _manager()
    try:
        ids = rush.start_workers(queue_loop, fun=add)  # n_workers from the plan
        rush.wait_for_workers(1, timeout=30)
        assert len(ids) == 1 and rush.n_running_workers == 1
    finally:
        rush.reset()
        rush.close()


# test-rush_plan.R: "set threshold"
def test_the_plans_log_thresholds_reach_the_workers(config):
    rush_plan(n_workers=2, config=config, log_thresholds={"rushhpc": "DEBUG"}, **HB)
    assert rush_config()["n_workers"] == 2
    assert rush_config()["log_thresholds"] == {"rushhpc": "DEBUG"}
    rush = _manager()
    try:
        ids = rush.start_workers(debug_once_loop)
        wait_until(lambda: rush.n_running_workers == 2, 30, what="two running workers")
        wait_until(lambda: set(rush.read_log()["worker_id"]) == set(ids), 20, what="a debug record of each worker")
        assert set(rush.read_log()["level"]) == {"DEBUG"}
    finally:
        rush.reset()
        rush.close()
