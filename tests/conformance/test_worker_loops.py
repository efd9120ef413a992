"""Conformance: rush's tests/testthat/test-worker_loops.R (its last version, before rush commit 48eac39
removed the file with worker_loop_default and worker_loop_callr), written fresh for rushhpc's queue_loop.

rush's worker_loop_default is rushhpc's `queue_loop`; worker_loop_callr (each evaluation in a separate R
session, with timeouts) has no counterpart: in rushhpc the worker process is the isolation, and a crash of
an evaluation ends its worker, which is found lost. Each test names the R test it mirrors; deliberate
differences are in docs/from-r.md."""

from __future__ import annotations

import os
import random
import signal
import sys

import cloudpickle
import pytest
from support import wait_until
from support.conformance import HB, add

from rushhpc import RushWorker, queue_loop
from rushhpc.network.view import Network

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _run(worker, fun):
    # rush pushed its tasks with terminate_workers = TRUE; here the loop ends when the queue stays empty
    return queue_loop(worker, fun, timeout=0.1, stop_when_empty=True)


def _fail(x1, x2):
    raise ValueError("Simple error")


def _draw(x1, x2):
    return {"y": random.randint(1, 10_000)}


# test-worker_loops.R: "worker_loop_default works"
def test_queue_loop(worker):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    assert _run(worker, add) is None
    assert worker.n_finished_tasks == 1
    assert worker.fetch_finished_tasks()["y"].tolist() == [3]


# test-worker_loops.R: "worker_loop_default works with failed task"
def test_queue_loop_with_a_failing_task(worker):
    worker.push_tasks([{"x1": 1, "x2": 2}])
    assert _run(worker, _fail) is None
    assert worker.n_failed_tasks == 1
    condition = worker.fetch_failed_tasks()["condition"].iloc[0]
    # deliberate difference: the condition is the traceback, ending in the message (R: the message)
    assert condition.rstrip().endswith("ValueError: Simple error") and "Traceback" in condition
    assert Network.open(worker.network_id, worker.config).running_worker_ids == [worker.worker_id]  # the worker lives on


# test-worker_loops.R: "worker_loop_default retries failed task"
def test_an_error_is_not_retried(worker):
    calls = []

    def fun(x1, x2):
        calls.append(1)
        raise ValueError("Simple error")

    worker.push_tasks([{"x1": 1, "x2": 2}], max_retries=2)
    _run(worker, fun)
    # max_retries is for tasks whose worker was lost; an error of the objective fails the task at once
    assert worker.n_failed_tasks == 1 and len(calls) == 1
    assert "Simple error" in worker.fetch_failed_tasks()["condition"].iloc[0]


# test-worker_loops.R: "worker_loop_default sets seed is set correctly"
def test_a_seeded_loop_is_reproducible(worker):
    # deliberate difference: no seed= argument (R's RushWorker dropped it too); seed the generator you use
    with pytest.raises(TypeError):
        RushWorker(worker.network_id, config=worker.config, seed=123456)
    worker.push_tasks([{"x1": x1, "x2": 2} for x1 in (1, 2, 3)])
    random.seed(123456)
    _run(worker, _draw)
    random.seed(123456)
    expected = [random.randint(1, 10_000) for _ in range(3)]
    # one worker takes tasks in the order they were pushed
    data = worker.fetch_finished_tasks()
    assert data["x1"].tolist() == [1, 2, 3] and data["y"].tolist() == expected


# test-worker_loops.R: "worker_loop_callr works"
def test_queue_loop_in_a_worker_process(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    rush.start_local_workers(queue_loop, n_workers=1, fun=add, **HB)
    rush.wait_for_tasks(keys, timeout=30)
    assert rush.n_finished_tasks == 1


# test-worker_loops.R: "worker_loop_callr works with failed task"
def test_a_failing_task_in_a_worker_process(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    rush.start_local_workers(queue_loop, n_workers=1, fun=_fail, **HB)
    rush.wait_for_tasks(keys, timeout=30)
    assert rush.n_failed_tasks == 1
    assert "ValueError: Simple error" in rush.fetch_failed_tasks()["condition"].iloc[0]
    assert rush.n_running_workers == 1


def _crash(x1, x2):
    os.kill(os.getpid(), signal.SIGKILL)


# test-worker_loops.R: "worker_loop_callr works with lost task"
def test_a_crashing_evaluation_fails_its_task(rush):
    keys = rush.push_tasks([{"x1": 1, "x2": 2}])
    [wid] = rush.start_local_workers(queue_loop, n_workers=1, fun=_crash, **HB)
    # deliberate difference: the crash ends the worker (R: only the callr session); it is found lost
    rush.wait_for_tasks(keys, timeout=30)
    assert rush.n_failed_tasks == 1 and rush.lost_worker_ids == [wid]
    assert "lost" in rush.fetch_failed_tasks()["condition"].iloc[0]


# test-worker_loops.R: "worker_loop_callr works with timeout"
def test_there_is_no_per_task_timeout(rush):
    # deliberate difference: no timeouts= (rush dropped them with worker_loop_callr); a task runs until it
    # ends, its worker is stopped (stop_workers), or a batch worker's walltime leaves no room for it
    with pytest.raises(TypeError):
        rush.push_tasks([{"x1": 1, "x2": 2}], timeouts=1)
    assert rush.n_tasks == 0


def _seeded_loop(rush, seed):
    random.seed(seed)
    queue_loop(rush, _draw, timeout=0.1, stop_when_empty=True)


# test-worker_loops.R: "worker_loop_callr sets seed correctly"
def test_a_seeded_worker_process_is_reproducible(rush):
    random.seed(123456)
    expected = [random.randint(1, 10_000) for _ in range(3)]
    rush.push_tasks([{"x1": x1, "x2": 2} for x1 in (1, 2, 3)])
    [wid] = rush.start_local_workers(_seeded_loop, n_workers=1, seed=123456, **HB)
    wait_until(lambda: wid in rush.terminated_worker_ids, 30, what="the worker to empty the queue")
    data = rush.fetch_finished_tasks()
    assert data["x1"].tolist() == [1, 2, 3] and data["y"].tolist() == expected
