"""Shared fixtures: a real redis-server (with a password) per test session, a fresh network per test,
and the project's SLURM test cluster (found through its SLURM_CONF, locked while a test uses it)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from support import free_port, make_test_ca, process_gone, slurm_cluster, tls_redis_binary, wait_until  # noqa: F401 (fixtures and tests use them)
from support.batch import backend, batch  # noqa: F401 (fixtures of tests/backends)
from support.programs import programs  # noqa: F401 (a fixture: the test programs in a folder)
from support.rendered_scripts import run_dir  # noqa: F401 (a fixture: a run folder for rendered scripts)
from support.ssh import sshd  # noqa: F401 (a fixture)

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


_USES_SLURM = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config, items):
    # a run without SLURM tests (tests/unit, a -m "not slurm" run) never asks the cluster anything
    config.stash[_USES_SLURM] = any(item.get_closest_marker("slurm") for item in items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # also with -q: where the SLURM tests ran, or why they could not
    if config.stash.get(_USES_SLURM, False):
        terminalreporter.write_line(_slurm_line())


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
    for var in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG", "RUSHHPC_SIGNING_KEY_FILE"):
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
    from support.batch_backends import require

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


@pytest.fixture
def busy(rush, config):
    """A network to look at (`rushhpc networks/workers/tasks/logs/top` and the dashboard): one in-process worker
    with a heartbeat process (its heartbeat age is live), 3 finished tasks (outputs ``y`` and ``loss``), 1 failed
    ("diverged"), 1 running and 2 queued, and 3 log records: WARNING, DEBUG, and an ERROR that reads as a
    spreadsheet formula. Yields (rush, worker). A kill request would SIGKILL this test process (the worker's
    heartbeat kills the process it watches): tests on it send none that may succeed."""
    w = rushhpc.RushWorker(rush.network_id, config=config, heartbeat_period=0.5, heartbeat_expire=5)
    rush.push_tasks([{"x": i, "y": -i} for i in range(7)])  # a parameter called y: the output y wins
    tasks = [w.pop_task(timeout=0) for _ in range(5)]
    w.finish_tasks([t["key"] for t in tasks[:3]], [{"y": 3.0, "loss": 0.5}, {"y": 1.0, "loss": 0.9},
                                                    {"y": 2.0, "loss": 0.1}])
    w.fail_tasks([tasks[3]["key"]], ["diverged"])
    for level, msg in (("WARNING", "hello from the worker"), ("DEBUG", "noise"), ("ERROR", "=HYPERLINK(1)")):
        rush.connector.xadd(rush.keys.log, {"worker_id": w.worker_id, "level": level, "logger": "rushhpc.t", "msg": msg})
    yield rush, w
    w.close()


# ======================================================================================
# Fixtures of `rushhpc redis` and the security tests (tests/integration/test_redis_command.py,
# tests/security/): servers started through rushhpc.server.service in private state
# folders, a TLS-capable redis-server, and a CA made by the test with the openssl CLI.
# Every redis-server started here is stopped by its pid at the end.
# ======================================================================================
import json  # noqa: E402 - imports of this section stay in it
import os  # noqa: E402


@pytest.fixture
def redis_home(tmp_path, monkeypatch):
    """A private $RUSHHPC_REDIS_HOME; every server started in it (library or CLI) is stopped
    by its recorded pid at the end, and must be gone."""
    from rushhpc.server import service as redis_server

    home = tmp_path / "redis-home"
    monkeypatch.setenv("RUSHHPC_REDIS_HOME", str(home))
    yield home
    pids = []
    for state in sorted(home.glob("*/server.json")) if home.exists() else []:
        pid = json.loads(state.read_text()).get("pid")
        redis_server.stop(state.parent, timeout=10, force=True)
        if pid:
            pids.append(pid)
    for pid in pids:
        wait_until(lambda pid=pid: process_gone(pid), 10, what=f"redis-server pid {pid} to end")


@pytest.fixture
def start_redis(redis_home):
    """start_redis(name, **StartOptions) -> the status dict of a server in ``redis_home``."""
    from rushhpc.server import service as redis_server

    def start(name: str = "default", **options):
        return redis_server.start(redis_home / name, redis_server.StartOptions(**options))

    return start


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """The test's own CA (server and client certificates); a second, unrelated CA as ``stranger``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make the test CA")
    folder = tmp_path_factory.mktemp("test-ca")
    ca = make_test_ca(folder, "ca")
    ca["stranger"] = make_test_ca(folder, "stranger")["ca"]
    return ca


# ======================================================================================
# A real Redis Cluster (tests/support/redis_cluster.py): 3 primaries on free loopback ports, started
# for the session and stopped (by pid) at its end. Skipped where no redis-server can run one,
# unless RUSHHPC_REQUIRE_CLUSTER=1 (CI), which makes that a failure.
# ======================================================================================
def _start_cluster(password):
    from support import redis_cluster

    try:
        return redis_cluster.RedisClusterProcesses(password=password)
    except redis_cluster.ClusterUnavailable as e:
        if os.environ.get("RUSHHPC_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"a Redis Cluster is required (RUSHHPC_REQUIRE_CLUSTER=1): {e}")
        pytest.skip(f"no Redis Cluster here: {e}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """3 primaries with requirepass + masterauth."""
    c = _start_cluster(secrets.token_hex(12))
    yield c
    c.stop()


@pytest.fixture(scope="session")
def redis_cluster_open(tmp_path_factory):
    """3 primaries without a password (loopback only)."""
    c = _start_cluster(None)
    yield c
    c.stop()


@pytest.fixture
def cluster_config(redis_cluster):
    """The `RedisConfig` of `redis_cluster` (cluster mode)."""
    return redis_config(host="127.0.0.1", port=redis_cluster.ports[0], password=redis_cluster.password,
                        cluster=True)
