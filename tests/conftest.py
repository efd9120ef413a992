"""Shared fixtures: a real redis-server (with a password) per test session, a fresh network per test."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

import rushhpc
from rushhpc import redis_config, remove_rush_plan


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
