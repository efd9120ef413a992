"""Task transitions, races, fetch and cache, with in-process workers against a real Redis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import rushhpc
from rushhpc import RushError, RushPayloadError, RushTimeoutError, RushWorker, WorkerStopped


def test_push_tasks_are_queued(rush):
    keys = rush.push_tasks([{"x": 1}, {"x": 2}])
    assert len(keys) == 2 and len(set(keys)) == 2
    assert rush.n_queued_tasks == 2 and rush.n_tasks == 2
    assert rush.n_running_tasks == rush.n_finished_tasks == rush.n_failed_tasks == 0
    df = rush.fetch_queued_tasks()
    assert list(df["x"]) == [1, 2]  # oldest first
    assert list(df["keys"]) == keys
    assert rush.queued_tasks == keys


def test_task_data_is_plain_json_in_redis(rush, worker):
    keys = rush.push_tasks([{"x": np.float64(1.5), "v": np.arange(3)}])
    raw = rush.connector.hget(rush.keys.task(keys[0]), "xs")
    assert json.loads(raw) == {"x": 1.5, "v": [0, 1, 2]}
    task = worker.pop_task(timeout=1)
    assert task["xs"] == {"x": 1.5, "v": [0, 1, 2]}


def test_pop_finish_cycle(rush, worker):
    keys = rush.push_tasks([{"x": 3}], xss_extra=[{"tag": "a"}])
    task = worker.pop_task(timeout=1)
    assert task["key"] == keys[0] and task["xs"] == {"x": 3} and task["xs_extra"] == {"tag": "a"}
    assert rush.n_running_tasks == 1 and rush.n_queued_tasks == 0
    running = rush.fetch_running_tasks()
    assert running["worker_id"].tolist() == [worker.worker_id]
    assert worker.finish_tasks([task["key"]], [{"y": 9}], yss_extra=[{"note": "ok"}]) == []
    df = rush.fetch_finished_tasks()
    assert df[["x", "y", "tag", "note"]].values.tolist() == [[3, 9, "a", "ok"]]
    assert df["worker_id"].tolist() == [worker.worker_id]
    assert df["finished_at"].iloc[0] >= df["started_at"].iloc[0] >= df["created_at"].iloc[0]
    assert rush.n_finished_tasks == 1 and rush.n_running_tasks == 0


def test_pop_from_empty_queue_returns_none(worker):
    assert worker.pop_task(timeout=0) is None
    assert worker.pop_task(timeout=0.1) is None


def test_fail_tasks_records_condition(rush, worker):
    rush.push_tasks([{"x": 1}, {"x": 2}])
    t1, t2 = worker.pop_task(timeout=1), worker.pop_task(timeout=1)
    worker.fail_tasks([t1["key"]], ["boom"])
    worker.fail_tasks(t2["key"], [ValueError("bad x")])
    df = rush.fetch_failed_tasks()
    assert sorted(df["condition"]) == ["ValueError: bad x", "boom"]
    assert rush.n_failed_tasks == 2


def test_push_running_tasks_and_finish(rush, worker):
    keys = worker.push_running_tasks([{"x": 1}, {"x": 2}])
    assert rush.n_running_tasks == 2
    worker.finish_tasks(keys, [{"y": 1}, {"y": 4}])
    assert sorted(rush.fetch_finished_tasks()["y"]) == [1, 4]


def test_push_running_tasks_with_max_tasks_is_all_or_none(rush, worker, config):
    rush.push_tasks([{"x": 0}])  # queued tasks count too: max_tasks caps every task of the network
    assert len(worker.push_running_tasks([{"x": 1}, {"x": 2}], max_tasks=3)) == 2
    assert worker.push_running_tasks([{"x": 3}], max_tasks=3) == []  # full: nothing created
    assert rush.n_tasks == 3 and rush.n_running_tasks == 2
    assert worker.push_running_tasks([{"x": 3}, {"x": 4}], max_tasks=4) == []  # one slot, two tasks: none
    assert rush.n_tasks == 3
    # a deferred worker waits for the reply of a capped push (it must know whether to evaluate)
    dw = RushWorker(rush.network_id, config=config, deferred_replies=True)
    try:
        keys = dw.push_running_tasks([{"x": 5}], max_tasks=4)
        assert len(keys) == 1 and rush.n_tasks == 4 and dw.push_running_tasks([{"x": 6}], max_tasks=4) == []
        dw.finish_tasks(keys, [{"y": 25}])
    finally:
        dw.close()
    assert rush.n_finished_tasks == 1
    # a call run again after a lost reply finds its task created: success, not created twice
    p = rush.protocol  # the same script as the worker's call, run again
    assert p.run(p.push_running_tasks_call(worker.worker_id, [(keys[0], "{}", "")], 4))[2] == "1"
    assert rush.n_tasks == 4
    with pytest.raises(RushError, match="max_tasks must be an integer"):
        worker.push_running_tasks([{"x": 7}], max_tasks=2.5)  # type: ignore[arg-type]


def test_workers_racing_for_the_last_slots_create_exactly_max_tasks(rush, config):
    import threading

    workers = [RushWorker(rush.network_id, config=config) for _ in range(6)]
    go = threading.Barrier(len(workers))
    made: list[int] = []

    def propose(w: RushWorker) -> None:
        go.wait()
        n = 0
        while w.push_running_tasks([{"x": n}], max_tasks=50):
            n += 1
        made.append(n)

    threads = [threading.Thread(target=propose, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for w in workers:
        w.close()
    assert sum(made) == 50 and rush.n_tasks == 50 and rush.n_running_tasks == 50


def test_first_writer_wins_after_worker_lost(rush, worker, caplog):
    keys = worker.push_running_tasks([{"x": 1}])
    # the manager declares the worker lost (e.g. after a freeze): its task fails
    assert rush.mark_workers("lost", [(worker.worker_id, "heartbeat_expired", "worker lost")], retry=False) == [
        worker.worker_id
    ]
    assert rush.fetch_failed_tasks()["condition"].tolist() == ["worker lost"]
    # the late result is discarded, not written over the failure
    assert worker.finish_tasks(keys, [{"y": 1}]) == keys
    assert rush.n_finished_tasks == 0 and rush.n_failed_tasks == 1
    assert rush.fetch_task(keys[0])["state"] == "failed"
    assert "discarded" in caplog.text
    # and the worker stops taking tasks
    assert worker.terminated
    with pytest.raises(WorkerStopped):
        worker.push_running_tasks([{"x": 2}])


def test_finish_by_other_worker_is_discarded(rush, config):
    w1 = RushWorker(rush.network_id, config=config)
    w2 = RushWorker(rush.network_id, config=config)
    rush.push_tasks([{"x": 1}])
    task = w1.pop_task(timeout=1)
    assert w2.finish_tasks([task["key"]], [{"y": 0}]) == [task["key"]]
    assert w1.finish_tasks([task["key"]], [{"y": 1}]) == []
    assert rush.fetch_finished_tasks()["y"].tolist() == [1]
    # a second finish of the same task changes nothing
    assert w1.finish_tasks([task["key"]], [{"y": 2}]) == [task["key"]]
    assert rush.fetch_finished_tasks(reset_cache=True)["y"].tolist() == [1]


def test_pending_list_recovery(rush, worker):
    """A worker that dies between the blocking move and the claim leaves the task findable."""
    keys = rush.push_tasks([{"x": 1}, {"x": 2}])
    moved = rush.connector.lmove(rush.keys.queued, rush.keys.pending(worker.worker_id), "RIGHT", "LEFT")
    assert moved == keys[0]
    # counted as queued, exactly once
    states = rush.tasks_with_state()
    assert sorted(states["queued"]) == sorted(keys) and states["running"] == []
    rush.mark_workers("lost", [(worker.worker_id, "process_died", "lost")], retry=True)
    assert rush.connector.llen(rush.keys.pending(worker.worker_id)) == 0
    assert rush.n_queued_tasks == 2 and rush.n_failed_tasks == 0
    # the recovered task is served first
    w2 = RushWorker(rush.network_id, config=rush.config)
    assert w2.pop_task(timeout=1)["key"] == keys[0]


def test_claim_by_stopped_worker_returns_task_to_queue(rush, worker):
    keys = rush.push_tasks([{"x": 1}])
    rush.stop_workers(type="kill", worker_ids=[worker.worker_id])
    assert worker.pop_task(timeout=0) is None
    assert rush.queued_tasks == keys


def test_max_retries_requeue_and_fence(rush, config):
    keys = rush.push_tasks([{"x": 1}], max_retries=1)
    w1 = RushWorker(rush.network_id, config=config)
    t = w1.pop_task(timeout=1)
    rush.mark_workers("lost", [(w1.worker_id, "heartbeat_expired", "lost")], retry=True)
    assert rush.queued_tasks == keys  # requeued, one retry used
    w2 = RushWorker(rush.network_id, config=config)
    t2 = w2.pop_task(timeout=1)
    assert t2["key"] == t["key"]
    assert w1.finish_tasks([t["key"]], [{"y": "stale"}]) == [t["key"]]  # fenced off
    rush.mark_workers("lost", [(w2.worker_id, "heartbeat_expired", "lost again")], retry=True)
    # no retry left: failed
    assert rush.fetch_failed_tasks()["condition"].tolist() == ["lost again"]


def test_fetch_tasks_with_state_each_task_once(rush, worker):
    rush.push_tasks([{"x": i} for i in range(5)])
    a = worker.pop_task(timeout=1)
    b = worker.pop_task(timeout=1)
    worker.finish_tasks([a["key"]], [{"y": 0}])
    worker.fail_tasks([b["key"]], ["no"])
    rush.connector.lmove(rush.keys.queued, rush.keys.pending(worker.worker_id), "RIGHT", "LEFT")
    c = worker.push_running_tasks([{"x": 99}])
    df = rush.fetch_tasks_with_state()
    assert len(df) == 6 and df["keys"].is_unique
    assert df["state"].value_counts().to_dict() == {"queued": 3, "running": 1, "finished": 1, "failed": 1}
    assert df.loc[df["keys"] == c[0], "state"].item() == "running"
    only = rush.fetch_tasks_with_state(states=["finished", "failed"])
    assert sorted(only["state"]) == ["failed", "finished"]
    assert len(rush.fetch_tasks()) == 6
    with pytest.raises(RushError, match="unknown task state"):
        rush.fetch_tasks_with_state(states=["done"])


def test_empty_tables_have_documented_columns(rush):
    for df in (rush.fetch_queued_tasks(), rush.fetch_finished_tasks(), rush.fetch_failed_tasks(), rush.fetch_new_tasks()):
        assert isinstance(df, pd.DataFrame) and len(df) == 0
        assert {"worker_id", "keys"} <= set(df.columns)
    assert "state" in rush.fetch_tasks().columns
    info = rush.worker_info
    assert {"worker_id", "pid", "hostname", "heartbeat", "state", "heartbeat_pid"} <= set(info.columns)
    assert set(rush.read_log().columns) == {"worker_id", "level", "timestamp", "logger", "msg"}


def test_finished_cache_is_incremental(rush, worker):
    keys = worker.push_running_tasks([{"x": i} for i in range(3)])
    worker.finish_tasks(keys, [{"y": i} for i in range(3)])
    assert len(rush.fetch_finished_tasks()) == 3
    assert rush.network.tasks.n_cached_finished == 3
    # a changed hash is not re-read: the cache is append-only, as the finished list is
    rush.connector.hset(rush.keys.task(keys[0]), "ys", '{"y": 100}')
    keys2 = worker.push_running_tasks([{"x": 3}])
    worker.finish_tasks(keys2, [{"y": 3}])
    df = rush.fetch_finished_tasks()
    assert df["y"].tolist() == [0, 1, 2, 3]
    assert rush.fetch_finished_tasks(reset_cache=True)["y"].tolist() == [100, 1, 2, 3]


def test_fetch_new_tasks(rush, worker):
    assert len(rush.fetch_new_tasks()) == 0
    k = worker.push_running_tasks([{"x": 1}, {"x": 2}])
    worker.finish_tasks(k, [{"y": 1}, {"y": 2}])
    assert rush.fetch_new_tasks()["y"].tolist() == [1, 2]
    assert len(rush.fetch_new_tasks()) == 0
    k = worker.push_running_tasks([{"x": 3}])
    worker.finish_tasks(k, [{"y": 3}])
    assert rush.fetch_new_tasks(timeout=1)["y"].tolist() == [3]
    assert len(rush.fetch_finished_tasks()) == 3


def test_push_finished_and_failed_tasks(rush):
    rush.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}, {"y": 4}], yss_extra=[{"src": "init"}, None])
    rush.push_failed_tasks([{"x": -1}], conditions=["out of domain"])
    assert rush.fetch_finished_tasks()["y"].tolist() == [1, 4]
    assert rush.fetch_failed_tasks()["condition"].tolist() == ["out of domain"]
    assert rush.n_tasks == 3
    with pytest.raises(RushError, match="expected 2"):
        rush.push_finished_tasks([{"x": 1}, {"x": 2}], [{"y": 1}])


def test_empty_queue(rush):
    rush.push_tasks([{"x": i} for i in range(4)])
    assert rush.empty_queue() == 4
    df = rush.fetch_failed_tasks()
    assert len(df) == 4 and set(df["condition"]) == {"Removed from queue"}
    assert rush.n_queued_tasks == 0


def test_bad_payloads_are_clear_errors(rush, worker):
    with pytest.raises(RushPayloadError, match="JSON"):
        rush.push_tasks([{"x": object()}])
    with pytest.raises(RushPayloadError, match="dict"):
        rush.push_tasks([[1, 2]])
    with pytest.raises(RushError, match="list of dicts"):
        rush.push_tasks({"x": 1})
    assert rush.n_tasks == 0  # nothing half-pushed


def test_wait_for_tasks(rush, worker):
    keys = rush.push_tasks([{"x": 1}])
    with pytest.raises(RushTimeoutError, match="1 task"):
        rush.wait_for_tasks(keys, timeout=0.2)
    t = worker.pop_task(timeout=1)
    worker.finish_tasks([t["key"]], [{"y": 1}])
    rush.wait_for_tasks(keys, timeout=5)


def test_terminate_flag_in_process(rush, worker):
    assert not worker.terminated
    assert rush.stop_workers(type="terminate", worker_ids=[worker.worker_id]) == [worker.worker_id]
    from support import wait_until

    wait_until(lambda: worker.terminated, 2, what="terminate flag")
    worker.set_terminated()
    assert rush.terminated_worker_ids == [worker.worker_id]
    assert rush.running_worker_ids == []


def test_reset_keeps_workers_when_asked(rush, worker):
    rush.push_tasks([{"x": 1}])
    rush.reset(workers=False)
    assert rush.n_tasks == 0
    assert rush.running_worker_ids == [worker.worker_id]


def test_two_managers_share_state(rush, config):
    other = rushhpc.rsh(rush.network_id, config=config)
    keys = rush.push_tasks([{"x": 1}])
    assert other.queued_tasks == keys


def test_fetch_new_then_finished_tasks_agree(rush, worker):
    k = worker.push_running_tasks([{"x": 1}, {"x": 2}])
    worker.finish_tasks(k, [{"y": 1}, {"y": 2}])
    assert rush.fetch_finished_tasks()["y"].tolist() == [1, 2]
    k = worker.push_running_tasks([{"x": 3}])
    worker.finish_tasks(k, [{"y": 3}])
    assert rush.fetch_new_tasks()["y"].tolist() == [1, 2, 3]  # its own cursor, from the start
    assert rush.fetch_finished_tasks()["y"].tolist() == [1, 2, 3]  # the table catches up with the rows read
    assert rush.fetch_finished_tasks()["keys"].is_unique


# ---------------------------------------------------------------- batched pops and prefetch (issue 12)
def _hash(rush, key, *fields):
    return rush.connector.hmget(rush.keys.task(key), list(fields))


def test_pop_tasks_claims_a_batch_in_queue_order(rush, worker):
    keys = rush.push_tasks([{"x": i} for i in range(5)])
    got = worker.pop_tasks(3)
    assert [t["key"] for t in got] == keys[:3] and [t["xs"]["x"] for t in got] == [0, 1, 2]
    assert rush.n_running_tasks == 3 and rush.n_queued_tasks == 2
    for t in got:  # each started, running under this worker, first attempt
        state, wid, attempt, started = _hash(rush, t["key"], "state", "worker_id", "attempt", "started_at")
        assert (state, wid, attempt) == ("running", worker.worker_id, "1") and started
    rest = worker.pop_tasks(10)
    assert [t["key"] for t in rest] == keys[3:]
    assert worker.pop_tasks(4, timeout=0) == []
    # one finish call for all, exactly once
    assert worker.finish_tasks(keys, [{"y": i} for i in range(5)]) == []
    assert rush.n_finished_tasks == 5 and rush.n_running_tasks == 0
    assert worker.finish_tasks(keys, [{"y": 9}] * 5) == keys  # a second finish changes nothing
    assert sorted(rush.fetch_finished_tasks()["y"]) == [0, 1, 2, 3, 4]


def test_pop_tasks_waits_for_one_on_an_empty_queue(rush, worker):
    assert worker.pop_tasks(3, timeout=0.1) == []
    rush.push_tasks([{"x": 1}])
    assert [t["xs"] for t in worker.pop_tasks(3, timeout=1)] == [{"x": 1}]


def test_prefetch_serves_claimed_tasks_and_marks_each_started(rush, worker):
    keys = rush.push_tasks([{"x": i} for i in range(5)])
    t0 = worker.pop_task(timeout=1, prefetch=3)
    assert t0["key"] == keys[0] and rush.n_running_tasks == 3 and rush.n_queued_tasks == 2
    assert _hash(rush, keys[0], "started_at")[0]
    assert _hash(rush, keys[1], "state", "worker_id", "started_at") == ["running", worker.worker_id, None]
    worker.finish_tasks([t0["key"]], [{"y": 0}])  # marks the next one started in the same call
    assert _hash(rush, keys[1], "started_at")[0] and _hash(rush, keys[2], "started_at")[0] is None
    served = [t0]
    for _ in range(4):
        t = worker.pop_task(timeout=1, prefetch=3)
        assert _hash(rush, t["key"], "started_at")[0]
        served.append(t)
        worker.finish_tasks([t["key"]], [{"y": t["xs"]["x"]}])
    assert [t["key"] for t in served] == keys  # FIFO, each served once
    assert worker.pop_task(timeout=0, prefetch=3) is None
    assert rush.n_finished_tasks == 5 and rush.n_running_tasks == 0


def test_prefetched_tasks_go_back_when_the_worker_terminates(rush, config, worker):
    keys = rush.push_tasks([{"x": i} for i in range(4)])
    t0 = worker.pop_task(timeout=1, prefetch=4)
    worker.finish_tasks([t0["key"]], [{"y": 0}])  # keys[1] is marked started, but never served
    worker.set_terminated()
    assert rush.n_running_tasks == 0 and rush.n_failed_tasks == 0 and rush.n_queued_tasks == 3
    # back at the front of the queue, no retry used up: keys[1], marked started, is given back
    # (attempt 1, free 1), the two never marked have their claim undone
    assert _hash(rush, keys[1], "state", "attempt", "free", "worker_id", "started_at") == ["queued", "1", "1", None, None]
    for k in keys[2:]:
        assert _hash(rush, k, "state", "attempt", "worker_id", "started_at") == ["queued", "0", None, None]
    other = RushWorker(rush.network_id, config=config)
    assert sorted(t["key"] for t in other.pop_tasks(3)) == sorted(keys[1:])
    other.close()


def test_a_lost_worker_loses_no_prefetched_task(rush, config, worker, caplog):
    keys = rush.push_tasks([{"x": i} for i in range(4)])  # max_retries 0: a started task of a lost worker fails
    t0 = worker.pop_task(timeout=1, prefetch=4)
    assert rush.mark_workers("lost", [(worker.worker_id, "heartbeat_expired", "worker lost")], retry=True) == [
        worker.worker_id
    ]
    assert rush.fetch_failed_tasks()["keys"].tolist() == [t0["key"]]  # the one it had started
    assert rush.n_queued_tasks == 3 and rush.n_running_tasks == 0  # the prefetched ones are queued again
    # its late results are discarded (fencing), also for the prefetched tasks it still holds
    assert worker.finish_tasks([t0["key"]], [{"y": 0}]) == [t0["key"]]
    assert worker.terminated
    assert worker.pop_task(timeout=0, prefetch=4) is None  # it returns what it holds instead of serving it
    other = RushWorker(rush.network_id, config=config)
    got = other.pop_tasks(3)
    assert sorted(t["key"] for t in got) == sorted(keys[1:])
    assert other.finish_tasks([t["key"] for t in got], [{"y": 1}] * 3) == []
    other.close()
    assert rush.n_finished_tasks == 3 and rush.n_failed_tasks == 1
    df = rush.fetch_tasks_with_state()
    assert df["keys"].is_unique and len(df) == 4
