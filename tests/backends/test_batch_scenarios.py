"""The scenario suite of the batch launchers: real SLURM cluster, and the PBS emulator.

Each scenario asserts the worker's state and reason, the tasks' final states,
and the number of scheduler calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import cloudpickle
import pytest
from support import wait_until
from support.batch import info, launcher_of

import rushhpc
from rushhpc import RushWorkerError, queue_loop, rush_plan

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def one_task_loop(rush, seconds: float = 120):
    """Holds one running task; finishes it when asked to terminate."""
    keys = rush.push_running_tasks([{"x": 1}])
    deadline = time.monotonic() + seconds
    while not rush.terminated and time.monotonic() < deadline:
        time.sleep(0.05)
    rush.finish_tasks(keys, [{"y": 1}])


def busy_loop(rush, seconds: float = 300):
    """Holds one running task and ignores everything but signals."""
    rush.push_running_tasks([{"x": 1}])
    time.sleep(seconds)


def poll_calls(r) -> int:
    """Scheduler calls made by one forced poll."""
    launcher = launcher_of(r)
    before = launcher.calls
    r.detect_lost_workers(poll_scheduler=True)
    return launcher.calls - before


def test_array_start_register_and_normal_end(batch):
    r = batch()
    ids = r.start_workers(queue_loop, n_workers=3, fun=lambda x: {"y": 2 * x}, stop_when_empty=True, timeout=3)
    launcher = launcher_of(r)
    assert launcher.submissions == 1  # one array, not three jobs
    assert set(r.worker_info["state"]) <= {"pending", "starting", "running"}
    r.wait_for_workers(worker_ids=ids, timeout=60)
    df = r.worker_info.set_index("worker_id")
    assert set(df.index) == set(ids) and set(df["state"]) == {"running"}
    assert all(df.loc[w, "job_id"] for w in ids) and df["job_id"].is_unique
    keys = r.push_tasks([{"x": i} for i in range(12)])
    r.wait_for_tasks(keys, timeout=60)
    assert sorted(r.fetch_finished_tasks()["y"]) == [2 * i for i in range(12)]
    wait_until(lambda: set(r.terminated_worker_ids) == set(ids), 60, what="workers to end")
    # the scheduler's view catches up: jobs finished, workers stay terminated
    wait_until(lambda: poll_calls(r) >= 0 and set(r.worker_info["job_state"]) == {"finished"}, 30,
               interval=0.5, what="jobs to be seen finished")
    assert set(r.worker_info["state"]) == {"terminated"}
    assert r.n_failed_tasks == 0
    assert poll_calls(r) == 0  # settled jobs are never asked about again


def test_failed_start_shows_stderr(batch):
    r = batch(setup=["rushhpc_no_such_command_xyz"])
    ids = r.start_workers(queue_loop, n_workers=1, fun=abs)
    with pytest.raises(RushWorkerError, match="failed to start") as e:
        r.wait_for_workers(worker_ids=ids, timeout=60)
    assert "rushhpc_no_such_command_xyz" in str(e.value)  # the stderr tail
    row = info(r, ids[0])
    assert row["state"] == "lost" and row["reason"] == "failed_to_start"


def test_cancel_from_outside(batch, backend):
    r = batch()
    ids = r.start_workers(busy_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
    job_id = info(r, ids[0])["job_id"]
    backend.cancel(job_id)
    wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) is not None and info(r, ids[0])["reason"] == "cancelled",
               60, interval=0.5, what="reason cancelled")
    assert info(r, ids[0])["state"] == "lost"
    assert r.n_failed_tasks == 1 and r.n_running_tasks == 0
    assert poll_calls(r) == 0  # its fate is known: the scheduler is not asked again


def test_external_cancel_reason_within_a_poll(batch, backend):
    """An scancel/qdel from outside: the worker's own SIGTERM verdict comes first, but the
    scheduler's final state decides the reason within one poll, without forced polls and
    with a long poll interval (a worker that ended makes the next poll urgent)."""
    r = batch(poll_interval=60, max_poll_interval=180)
    ids = r.start_workers(busy_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
    r.detect_lost_workers()  # the first poll; the next is due in 60 s
    assert info(r, ids[0])["job_state"] == "running"
    backend.cancel(info(r, ids[0])["job_id"])
    wait_until(lambda: r.detect_lost_workers() is not None and info(r, ids[0])["reason"] == "cancelled", 30,
               interval=0.5, what="reason cancelled")
    row = info(r, ids[0])
    assert row["state"] == "lost" and row["job_state"] == "finished"


def test_cancel_of_a_pending_job(batch, backend):
    r = batch(**backend.hold_options())
    ids = r.start_workers(queue_loop, n_workers=1, fun=abs)
    assert r.detect_lost_workers(poll_scheduler=True) == []
    backend.cancel(info(r, ids[0])["job_id"])
    wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) is not None and info(r, ids[0])["state"] == "lost",
               30, interval=0.5, what="the cancelled pending job's worker to be lost")
    assert info(r, ids[0])["reason"] == "cancelled"


def test_time_limit_ends_terminated(batch, backend):
    """The worker stops taking tasks near the limit and ends as terminated: no task is lost."""
    r = batch(time="00:01:00", walltime_margin=50)
    ids = r.start_workers(one_task_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.terminated_worker_ids == ids, 40, what="worker to terminate before its time limit")
    assert r.n_finished_tasks == 1 and r.n_failed_tasks == 0


def test_hung_worker_is_killed_through_the_scheduler(batch):
    r = batch(heartbeat_expire=3)
    ids = r.start_workers(busy_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
    row = info(r, ids[0])
    pids = [int(row["pid"]), int(row["heartbeat_pid"])]
    assert poll_calls(r) == 1  # all jobs active: one query
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        lost = wait_until(lambda: r.detect_lost_workers(), 30, interval=0.5, what="hung worker to be found")
        assert lost == ids
        row = info(r, ids[0])
        assert row["state"] == "lost" and row["reason"] in ("heartbeat_expired", "cancelled")
        assert r.n_failed_tasks == 1
        # the job was cancelled through the scheduler: it ends
        wait_until(lambda: poll_calls(r) >= 0 and info(r, ids[0])["job_state"] == "finished", 60, interval=0.5,
                   what="hung job to end")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_suspended_job_is_not_killed(batch, backend):
    r = batch(heartbeat_expire=2)
    ids = r.start_workers(one_task_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
    job_id = info(r, ids[0])["job_id"]
    backend.suspend(job_id)
    try:
        wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) == [] and info(r, ids[0])["state"] == "suspended",
                   30, interval=0.5, what="suspended state")
        hb_key = r.keys.heartbeat(ids[0])
        wait_until(lambda: not r.connector.exists(hb_key), 10, what="heartbeat to expire while suspended")
        for _ in range(4):
            assert r.detect_lost_workers(poll_scheduler=True) == []
        assert info(r, ids[0])["state"] == "suspended" and r.n_running_tasks == 1
    finally:
        backend.resume(job_id)
    wait_until(lambda: r.connector.exists(r.keys.heartbeat(ids[0])), 20, what="heartbeat after resume")
    wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) == [] and info(r, ids[0])["state"] == "running",
               20, interval=0.5, what="running again")
    r.stop_workers(type="terminate")
    wait_until(lambda: r.terminated_worker_ids == ids, 30, what="terminated")
    assert r.n_finished_tasks == 1 and r.n_failed_tasks == 0


def test_held_job_is_not_lost(batch, backend):
    r = batch(**backend.hold_options())
    ids = r.start_workers(queue_loop, n_workers=1, fun=abs)
    for _ in range(4):
        assert poll_calls(r) == 1  # a held job: one query, no verdict
        assert r.detect_lost_workers(poll_scheduler=True) == []
        time.sleep(0.3)
    row = info(r, ids[0])
    assert row["state"] in ("held", "pending") and row["job_state"] in ("held", "pending")
    backend.release(row["job_id"])
    r.wait_for_workers(worker_ids=ids, timeout=60)
    assert info(r, ids[0])["state"] == "running"


def test_stop_workers_kill_and_terminate(batch):
    r = batch()
    ids = r.start_workers(one_task_loop, n_workers=2)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 2, 30, what="two running tasks")
    assert r.stop_workers(type="terminate", worker_ids=[ids[0]]) == [ids[0]]
    wait_until(lambda: r.terminated_worker_ids == [ids[0]], 30, what="terminate")
    pid = int(info(r, ids[1])["pid"])
    assert r.stop_workers(type="kill", worker_ids=[ids[1]]) == [ids[1]]
    assert r.killed_worker_ids == [ids[1]]
    assert r.fetch_failed_tasks()["condition"].tolist() == ["worker was killed"]
    assert r.n_finished_tasks == 1
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, what="killed worker process to exit")
    wait_until(lambda: poll_calls(r) >= 0 and set(r.worker_info["job_state"]) == {"finished"}, 60, interval=0.5,
               what="both jobs to end")


def test_vanished_job_is_lost_after_two_misses(batch, backend):
    # held, so that its worker cannot register between the two polls (a registered worker with a
    # live heartbeat is never declared vanished, and a worker may register within 0.6 s)
    r = batch(vanish_grace=0, **backend.hold_options())
    ids = r.start_workers(queue_loop, n_workers=1, fun=abs)
    # a job id the scheduler has never heard of stands in for one purged from every answer
    rec = r.record(ids[0])
    rec.job_id = "999999" if launcher_of(r).name == "slurm" else "999999[0].pbsemu"
    r.store_records([rec])
    assert r.detect_lost_workers(poll_scheduler=True) == []  # one miss: not yet
    assert r.detect_lost_workers(poll_scheduler=True) == ids
    assert info(r, ids[0])["reason"] == "vanished"


@pytest.fixture
def slurm_only(backend):
    assert backend.name == "slurm"
    return backend


slurm_scenario = pytest.mark.parametrize("backend", ["slurm"], indirect=True)


@slurm_scenario
def test_node_failure(cluster_owner, batch, slurm_only):
    """Kill a node's slurmd and the job's processes: NODE_FAIL becomes the worker's reason.
    Owns the cluster (exclusive lock) while a node is down; restored afterwards."""
    r = batch(heartbeat_expire=40)
    ids = r.start_workers(busy_loop, n_workers=1)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
    node = info(r, ids[0])["node"]
    assert node and node.startswith("n")
    out = cluster_owner.script("node-kill", node[1:], "--with-jobs", timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        wait_until(lambda: r.detect_lost_workers() == ids, 120, interval=1, what="node failure to be seen")
        row = info(r, ids[0])
        assert row["state"] == "lost" and row["reason"] == "node_fail"
        # a task its worker created fails with it (nobody pops a queue in that pattern); the
        # condition names the node failure. Queued tasks would go back uncounted (test_preemption_rules).
        assert r.n_failed_tasks == 1 and "NODE_FAIL" in r.fetch_failed_tasks()["condition"].item()
    finally:
        out = cluster_owner.script("node-restart", node[1:], timeout=120)
        assert out.returncode == 0, out.stderr


@slurm_scenario
def test_cancel_without_accounting(cluster_owner, batch, slurm_only):
    """With accounting off, finished jobs are read from scontrol.
    Owns the cluster (exclusive lock) while accounting is off; restored afterwards."""
    out = cluster_owner.script("start", "--no-accounting")
    assert out.returncode == 0, out.stderr
    try:
        r = batch()
        ids = r.start_workers(busy_loop, n_workers=1)
        r.wait_for_workers(worker_ids=ids, timeout=60)
        wait_until(lambda: r.n_running_tasks == 1, 30, what="running task")
        slurm_only.cancel(info(r, ids[0])["job_id"])
        wait_until(lambda: r.detect_lost_workers(poll_scheduler=True) is not None
                   and info(r, ids[0])["reason"] == "cancelled", 60, interval=0.5, what="reason cancelled")
        assert r.n_failed_tasks == 1
        sacct = subprocess.run(["sacct"], capture_output=True, text=True)
        assert "disabled" in (sacct.stdout + sacct.stderr)
    finally:
        out = cluster_owner.script("start")
        assert out.returncode == 0, out.stderr


@slurm_scenario
def test_hard_time_limit_reason_is_timeout(batch, slurm_only):
    """A worker that cannot stop in time (its task ignores the pre-timeout signal) is killed by
    SLURM at its time limit: the reason is the scheduler's (timeout), not the worker's SIGTERM."""
    r = batch(time="00:01:00", walltime_margin=1, heartbeat_expire=20)
    ids = r.start_workers(busy_loop, n_workers=1, seconds=600)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    wait_until(lambda: r.detect_lost_workers() is not None and info(r, ids[0])["reason"] == "timeout", 150,
               interval=1, what="reason timeout")
    assert info(r, ids[0])["state"] == "lost" and r.n_running_tasks == 0


@slurm_scenario
def test_submitit_launcher_on_slurm(slurm_only, config):
    """submitit submits one array; job ids are recorded and polled like the SLURM launcher's."""
    rush_plan(config=config, worker_type="submitit", heartbeat_period=0.5, heartbeat_expire=4,
              launcher_options={"time": "00:10:00", "poll_interval": 0.5, "startup_grace": 60})
    r = rushhpc.rsh("s-" + uuid.uuid4().hex[:8])
    try:
        ids = r.start_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x + 1})
        launcher = launcher_of(r)
        assert launcher.executor.cluster == "slurm" and launcher._slurm.submissions == 1
        r.wait_for_workers(worker_ids=ids, timeout=90)
        df = r.worker_info.set_index("worker_id")
        assert set(df["launcher"]) == {"submitit"} and all("_" in j for j in df["job_id"])
        keys = r.push_tasks([{"x": i} for i in range(6)])
        r.wait_for_tasks(keys, timeout=60)
        assert sorted(r.fetch_finished_tasks()["y"]) == [1, 2, 3, 4, 5, 6]
        assert poll_calls(r) == 1
        r.stop_workers(type="kill")
        assert set(r.killed_worker_ids) == set(ids)
        wait_until(lambda: poll_calls(r) >= 0 and set(r.worker_info["job_state"]) == {"finished"}, 60,
                   interval=0.5, what="jobs to end")
    finally:
        r.reset()
        slurm_only.cleanup(f"rushhpc-{r.network_id}")


def test_secrets_stay_out_of_the_job(batch, backend, monkeypatch, config):
    """Neither the script nor the job's environment holds the Redis password, even when the
    manager's environment does (sbatch exports its whole environment by default)."""
    monkeypatch.setenv("RUSHHPC_REDIS_URL", config.url())

    def env_loop(rush):
        import os

        keys = rush.push_running_tasks([{"x": 1}])
        rush.finish_tasks(keys, [{"env": "\n".join(f"{k}={v}" for k, v in os.environ.items())}])

    r = batch()
    script = r.render_script(env_loop, n_workers=1)
    assert config.password not in script
    ids = r.start_workers(env_loop, n_workers=1)
    wait_until(lambda: r.n_finished_tasks == 1, 60, what="the job to report its environment")
    env = r.fetch_finished_tasks()["env"].item()
    assert "SLURM_JOB_ID" in env or "PBS_JOBID" in env
    assert config.password not in env and "RUSHHPC_REDIS_URL" not in env
    assert ids


@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_a_refused_submission_shows_the_schedulers_message(batch, backend):
    """sbatch refusing the script (a partition that does not exist) is one clear error with
    sbatch's own words; nothing is left recorded as launched."""
    r = batch(partition="no_such_partition")
    with pytest.raises(RushWorkerError, match="sbatch refused the worker script") as e:
        r.start_workers(queue_loop, n_workers=2, fun=abs)
    assert "invalid partition" in str(e.value).lower() and "no_such_partition" in str(e.value)
    assert r.worker_rows() == [] and r.records() == {}
