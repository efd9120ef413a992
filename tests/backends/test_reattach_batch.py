"""A manager dies; a new one (a Python session, and the CLI) attaches by network id.

The first manager runs in a subprocess that is SIGKILLed once its batch workers have
registered. The batch jobs live on in the scheduler. A new manager attached to the
network must see every worker and task, declare no live worker lost however often it
polls (even past the vanish grace), and be able to stop them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from support import REPO, wait_until
from support.batch_backends import REPO, PbsBackend, SlurmBackend, require

from rushhpc import Rush, rush_plan

BACKENDS = {"slurm": SlurmBackend, "pbs": PbsBackend, "submitit": SlurmBackend}
FAST = {"poll_interval": 0.5, "max_poll_interval": 1, "startup_grace": 60, "time": "00:10:00", "vanish_grace": 1}

FIRST_MANAGER = textwrap.dedent("""
    import json, sys, time
    import rushhpc
    from rushhpc import queue_loop
    cfg, network, worker_type, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    rushhpc.rush_plan(config=cfg, worker_type=worker_type, heartbeat_period=0.5, heartbeat_expire=4,
                      launcher_options=options, start_worker_timeout=90)
    rush = rushhpc.rsh(network)
    ids = rush.start_workers(queue_loop, n_workers=2, fun=lambda x: {"y": 2 * x})
    rush.wait_for_workers(worker_ids=ids, timeout=90)
    rush.push_tasks([{"x": i} for i in range(6)])
    print(json.dumps(ids), flush=True)
    time.sleep(3600)
""")


@pytest.fixture(params=["slurm", "pbs", "submitit"])
def kind(request, monkeypatch, tmp_path):
    cls = BACKENDS[request.param]
    if request.param == "pbs":
        monkeypatch.setenv("PATH", f"{cls.bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PBS_EMU_HOME", str(tmp_path / "pbs-emu"))
        require("pbs", cls.available(), "tests/pbs_emulator is needed")
    else:
        require("slurm", cls.available(), "start it with scripts/slurm-cluster.sh start")
    return request.param, cls()


def test_new_manager_attaches_after_the_first_died(kind, config):
    worker_type, backend = kind
    network = "re-" + uuid.uuid4().hex[:8]
    options = dict(FAST)
    if worker_type == "submitit":
        options = {k: v for k, v in options.items() if k != "max_poll_interval"}
    first = subprocess.Popen([sys.executable, "-c", FIRST_MANAGER, config.url(), network, worker_type,
                              json.dumps(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, start_new_session=True, env=dict(os.environ))
    second = None
    try:
        line = first.stdout.readline()
        assert line, f"first manager failed: {first.stderr.read()}"
        ids = json.loads(line)
        os.killpg(first.pid, signal.SIGKILL)  # the manager dies without any cleanup
        first.wait(10)

        rush_plan(config=config, worker_type=worker_type, launcher_options=options)
        second = Rush.attach(network, config=config)
        assert set(second.running_worker_ids) == set(ids)
        wait_until(lambda: second.n_finished_tasks == 6, 60, what="the tasks the first manager pushed")
        # poll the scheduler again and again, past the vanish grace: nobody is declared lost
        start = time.monotonic()
        polls = 0
        while time.monotonic() - start < 3 * options["vanish_grace"] or polls < 4:
            assert second.detect_lost_workers(poll_scheduler=True) == []
            polls += 1
            time.sleep(0.3)
        assert second.lost_worker_ids == []
        rows = {r["worker_id"]: r for r in second.worker_rows()}
        assert {rows[w]["job_state"] for w in ids} == {"running"}
        # the CLI sees the same and declares no one lost
        out = subprocess.run([sys.executable, "-m", "rushhpc", "monitor", network, "--once", "--json"],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, RUSHHPC_REDIS_URL=config.url(), PATH=os.environ["PATH"]))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["lost"] == []
        # and the new manager can stop the workers it never started
        assert sorted(second.stop_workers(type="kill")) == sorted(ids)
        wait_until(lambda: second.detect_lost_workers(poll_scheduler=True) is not None
                   and {r["job_state"] for r in second.worker_rows()} == {"finished"}, 90, interval=0.5,
                   what="the jobs to end")
        assert set(second.killed_worker_ids) == set(ids)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        if second is not None:
            second.reset()
            second.close()
        backend.cleanup(f"rushhpc-{network}")
