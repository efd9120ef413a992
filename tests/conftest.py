"""Shared fixtures: a real redis-server (with a password) per test session, a fresh network per test,
and the project's SLURM test cluster (found through its SLURM_CONF, locked while a test uses it)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import slurm_cluster

import rushhpc
from rushhpc import redis_config, remove_rush_plan

_previous_slurm_conf = os.environ.get("SLURM_CONF")


def pytest_configure(config):
    config.addinivalue_line("markers", "coexist: checks the test cluster next to a system MariaDB, munged and "
                            "another SLURM cluster on /etc/slurm (RUSHHPC_TEST_COEXIST=1 starts stand-ins)")
    # Every SLURM command of the session (the tests', rushhpc's launchers', the worker jobs') talks to
    # the project's test cluster, never to the machine's own /etc/slurm or a site's SLURM_CONF.
    os.environ["SLURM_CONF"] = str(slurm_cluster.cluster().conf)
    os.environ.pop("RUSHHPC_TEST_CLUSTER_LOCK_FD", None)


def _slurm_line() -> str:
    c = slurm_cluster.cluster()
    was = f" (was {_previous_slurm_conf})" if _previous_slurm_conf not in (None, str(c.conf)) else ""
    reason = c.unavailable_reason()
    return f"SLURM tests: SLURM_CONF={c.conf}{was}: " + ("the test cluster answers" if reason is None
                                                         else f"not available: {reason}")


def pytest_report_header(config):
    return [_slurm_line()]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # also with -q, which prints no header: where the SLURM tests ran, or why they could not
    terminalreporter.write_line(_slurm_line())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    def __init__(self, tmp: Path, password: str | None):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run .ci/run or apt-get install redis-server")
        self.port = free_port()
        self.password = password
        self.dir = tmp
        conf = [f"port {self.port}", "bind 127.0.0.1", f'dir "{tmp}"', 'save ""', "appendonly no",
                f'logfile "{tmp / "redis.log"}"']
        if password:
            conf.append(f'requirepass "{password}"')
        self.proc = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.proc.stdin.write("\n".join(conf).encode())
        self.proc.stdin.close()
        self.config = redis_config(host="127.0.0.1", port=self.port, password=password)
        wait_until(self._ping, 10, what="redis-server to answer")

    def _ping(self) -> bool:
        try:
            return self.config.client().ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=secrets.token_hex(12))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own run directory and no plan or Redis URL from the environment."""
    monkeypatch.setenv("RUSHHPC_RUN_DIR", str(tmp_path / "runs"))
    for var in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    remove_rush_plan()
    yield
    remove_rush_plan()


@pytest.fixture(autouse=True)
def _slurm_cluster_lock():
    """A test that used the SLURM test cluster (SlurmBackend.available() takes a shared lock) lets go of it."""
    yield
    slurm_cluster.cluster().release()


@pytest.fixture
def cluster_owner():
    """The test owns the SLURM test cluster: an exclusive lock while it runs (no other test or
    slurm-cluster.sh start/stop uses the cluster meanwhile), and the cluster restored afterwards:
    the same configuration, every daemon running under its pid file, and `status` telling the truth."""
    from batch_backends import require

    c = slurm_cluster.cluster()
    require("slurm", c.unavailable_reason() is None, c.unavailable_reason() or "")
    if os.geteuid() != 0:
        require("slurm", False, "a test that restarts the test cluster's daemons must run as root")
    c.own()
    try:
        accounting = c.accounting()
        st = c.status()
        if not st.ok:  # begin from a healthy cluster
            out = c.script("start", *([] if accounting else ["--no-accounting"]))
            assert out.returncode == 0, f"the test cluster could not be started before the test:\n{out.stderr}"
        conf = c.conf.read_text()
        yield c
        out = c.script("start", *([] if accounting else ["--no-accounting"]))
        assert out.returncode == 0, f"the test cluster could not be restored:\n{out.stderr}"
        assert c.conf.read_text() == conf, "the test cluster's slurm.conf differs after the test"
        st = c.status()
        assert st.ok, f"slurm-cluster.sh status after restoring:\n{st.text}"
        assert c.truth_problems(st) == [], st.text
    finally:
        c.release()


@pytest.fixture
def config(redis_server):
    return redis_server.config


@pytest.fixture
def rush(config):
    r = rushhpc.Rush("t-" + uuid.uuid4().hex[:10], config=config)
    yield r
    r.reset()
    r.close()
    # nothing of the network may remain after reset
    left = list(r.connector.scan_iter(match=r.keys.pattern))
    assert left == [], f"reset left keys behind: {left[:5]}"


@pytest.fixture
def worker(rush, config):
    w = rushhpc.RushWorker(rush.network_id, config=config)
    yield w
    w.close()
