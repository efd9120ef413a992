"""A manager of SSH workers dies; a new one attaches by network id (the real private sshd of
tests/backends/test_ssh_launcher.py). SSH workers are started detached on their host, so they outlive the
manager: the new manager must see them and their tasks, declare none lost, and stop them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

from support import wait_until
from support.ssh import pid_running

from rushhpc import Rush, rush_plan

FIRST_MANAGER = textwrap.dedent("""
    import json, sys, time
    import rushhpc
    from rushhpc import queue_loop
    cfg, network, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    rushhpc.rush_plan(config=cfg, worker_type="ssh", heartbeat_period=0.5, heartbeat_expire=4,
                      launcher_options=options, start_worker_timeout=60)
    rush = rushhpc.rsh(network)
    ids = rush.start_workers(queue_loop, n_workers=2, fun=lambda x: {"y": 2 * x})
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    rush.push_tasks([{"x": i} for i in range(6)])
    print(json.dumps(ids), flush=True)
    time.sleep(3600)
""")


def test_new_manager_attaches_to_ssh_workers_after_the_first_died(sshd, config):  # noqa: F811
    network = "rs-" + uuid.uuid4().hex[:8]
    options = sshd.options(workers_per_host=2)
    first = subprocess.Popen([sys.executable, "-c", FIRST_MANAGER, config.url(), network, json.dumps(options)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    second = None
    pids: list[int] = []
    try:
        line = first.stdout.readline()
        assert line, f"first manager failed: {first.stderr.read()}"
        ids = json.loads(line)
        os.killpg(first.pid, signal.SIGKILL)  # no cleanup at all
        first.wait(10)

        rush_plan(config=config, worker_type="ssh", launcher_options=options)
        second = Rush.attach(network, config=config)
        assert set(second.running_worker_ids) == set(ids)
        info = second.worker_info.set_index("worker_id")
        pids = [int(p) for p in info["pid"]] + [int(p) for p in info["heartbeat_pid"]]
        assert all(pid_running(p) for p in pids)  # detached: they outlived their manager
        wait_until(lambda: second.n_finished_tasks == 6, 60, what="the tasks the first manager pushed")
        for _ in range(4):  # beating workers: none is declared lost, however often it looks
            assert second.detect_lost_workers(poll_scheduler=True) == []
            time.sleep(0.5)
        out = subprocess.run([sys.executable, "-m", "rushhpc", "workers", network, "--json"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, RUSHHPC_REDIS_URL=config.url()))
        assert out.returncode == 0, out.stderr
        assert {w["worker_id"]: w["state"] for w in json.loads(out.stdout)} == {w: "running" for w in ids}
        # the new manager stops workers it never started
        assert sorted(second.stop_workers(type="kill")) == sorted(ids)
        assert set(second.killed_worker_ids) == set(ids)
        wait_until(lambda: not any(pid_running(p) for p in pids), 20, what="the ssh workers to exit")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        for p in pids:  # stop only what this test started, by pid
            if pid_running(p):
                os.kill(p, signal.SIGKILL)
        if second is not None:
            second.reset()
            second.close()
