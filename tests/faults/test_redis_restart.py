"""Redis restarted under a running network: with append-only persistence nothing is lost; without it,
the manager says so clearly and the workers exit non-zero instead of hanging."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest
from support import free_port, wait_until
from support.invariant import check, settle

import rushhpc
from rushhpc import RushNetworkLostError, queue_loop, redis_config

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class RestartableRedis:
    """A redis-server on a fixed port and folder, stopped and started again by this test (by pid)."""

    def __init__(self, folder: Path, appendonly: bool):
        self.folder, self.port, self.password = folder, free_port(), secrets.token_hex(12)
        self.appendonly = appendonly
        self.config = redis_config(host="127.0.0.1", port=self.port, password=self.password)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        conf = [f"port {self.port}", "bind 127.0.0.1", f'dir "{self.folder}"', 'save ""',
                f'requirepass "{self.password}"', f'logfile "{self.folder / "redis.log"}"',
                "appendonly " + ("yes" if self.appendonly else "no"), "appendfsync always"]
        self.proc = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.proc.stdin.write("\n".join(conf).encode())
        self.proc.stdin.close()
        wait_until(self._ping, 15, what="redis-server to answer")

    def _ping(self) -> bool:
        try:
            return bool(self.config.probe_client(0.5).ping())
        except Exception:  # noqa: BLE001
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server flushes its AOF and exits
            self.proc.wait(20)


@pytest.fixture
def restartable(tmp_path):
    servers = []

    def make(appendonly: bool) -> RestartableRedis:
        s = RestartableRedis(tmp_path / f"r{len(servers)}", appendonly)
        servers.append(s)
        return s

    (tmp_path / "r0").mkdir()
    (tmp_path / "r1").mkdir()
    yield make
    for s in servers:
        s.stop()


def _quick(x):
    time.sleep(0.002)
    return {"y": x}


def test_restart_with_appendonly_loses_nothing(restartable):
    server = restartable(appendonly=True)
    rush = rushhpc.rsh("rr-" + uuid.uuid4().hex[:6], config=server.config)
    try:
        ids = rush.start_local_workers(queue_loop, n_workers=2, fun=_quick, heartbeat_period=0.5, heartbeat_expire=20)
        rush.wait_for_workers(2, timeout=30)
        keys = rush.push_tasks([{"x": i} for i in range(2000)])
        wait_until(lambda: rush.n_finished_tasks >= 300, 60, what="a part of the tasks")
        server.stop()
        time.sleep(1.0)  # the workers and their heartbeats hit a closed port meanwhile
        server.start()
        rush.wait_for_tasks(keys, timeout=180)
        assert set(rush.running_worker_ids) == set(ids) and rush.lost_worker_ids == []
        settle(rush)
        assert check(rush, 2000) == {"finished": 2000}
        assert sorted(rush.fetch_finished_tasks()["y"]) == list(range(2000))
    finally:
        rush.reset()
        rush.close()


def test_restart_without_persistence_is_a_clear_error(restartable):
    server = restartable(appendonly=False)
    rush = rushhpc.rsh("rn-" + uuid.uuid4().hex[:6], config=server.config)
    try:
        rush.start_local_workers(queue_loop, n_workers=2, fun=_quick, heartbeat_period=0.5, heartbeat_expire=20)
        rush.wait_for_workers(2, timeout=30)
        keys = rush.push_tasks([{"x": i} for i in range(2000)])
        wait_until(lambda: rush.n_finished_tasks >= 100, 60, what="a part of the tasks")
        server.stop()
        server.start()  # empty
        with pytest.raises(RushNetworkLostError, match="gone from Redis"):
            rush.wait_for_tasks(keys, timeout=60)
        procs = rush.launcher("local").processes
        wait_until(lambda: all(p.poll() is not None for p in procs.values()), 60, what="the workers to exit")
        assert all(p.returncode != 0 for p in procs.values()), [p.returncode for p in procs.values()]
    finally:
        rush.close()
