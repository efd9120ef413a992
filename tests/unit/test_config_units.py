"""Configuration: Redis errors, network ids, the plan, YAML plan files, the embedded Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rushhpc import RushConfigError, redis_config, rsh, rush_config, rush_plan


@pytest.mark.parametrize("bad", ["", "a b", "net*", "{net}", "a:b", "-x", "x" * 200, "ü"])
def test_malformed_network_id(config, bad):
    with pytest.raises(RushConfigError, match="invalid network id"):
        rsh(bad, config=config)


def test_redis_config_url_and_overrides():
    cfg = redis_config("rediss://user:p%40ss@host1:7000/3", port=7001)
    assert (cfg.host, cfg.port, cfg.db, cfg.username, cfg.password, cfg.tls) == ("host1", 7001, 3, "user", "p@ss", True)
    assert "p@ss" not in repr(cfg) and "p@ss" not in str(cfg)
    assert redis_config(cfg.url()) == cfg
    with pytest.raises(RushConfigError, match="redis://"):
        redis_config("http://host")


def test_plan_validation():
    with pytest.raises(RushConfigError, match="worker_type"):
        rush_plan(worker_type="kubernetes")
    with pytest.raises(RushConfigError, match="larger than heartbeat_period"):
        rush_plan(heartbeat_period=10, heartbeat_expire=10)
    with pytest.raises(RushConfigError, match="positive integer"):
        rush_plan(n_workers=0)


def test_broken_yaml_plan_file(tmp_path, monkeypatch):
    f = tmp_path / "plan.yaml"
    f.write_text("n_workers: [1\n")
    monkeypatch.setenv("RUSHHPC_CONFIG", str(f))
    with pytest.raises(RushConfigError, match="not valid YAML"):
        rush_config()
    f.write_text("n_wrokers: 2\n")
    with pytest.raises(RushConfigError, match="unknown key.*n_wrokers"):
        rush_config()


def test_embedded_redis_when_nothing_is_configured(tmp_path):
    """A fresh interpreter with no config starts a private, password-protected Redis and stops it at exit."""
    code = (
        "import rushhpc, redis\n"
        "r = rushhpc.rsh('emb')\n"
        "assert r.embedded and r.config.host == '127.0.0.1' and r.config.password\n"
        "try:\n"
        "    redis.Redis(port=r.config.port, retry=None).ping(); print('open')\n"
        "except (redis.AuthenticationError, redis.ResponseError):\n"
        "    print('protected')\n"
        "import rushhpc.server.embedded as e\n"
        "print(e._SERVER.proc.pid, r.config.port, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "protected"
    pid = int(lines[1].split()[0])
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"


def test_embedded_redis_missing_binary_message(monkeypatch):
    """The embedded Redis finds its binary as `rushhpc redis start` does (one find_redis_server, issue 18), and
    its message speaks to a session that configured no Redis: install one, or name it or a running Redis."""
    from rushhpc.server import binary
    from rushhpc.server.embedded import EmbeddedRedis

    monkeypatch.setattr(binary, "_candidates", lambda: [])  # no redis-server anywhere
    server = EmbeddedRedis()
    try:
        with pytest.raises(RushConfigError, match="no Redis is configured.*apt-get install redis-server.*"
                                                  "RUSHHPC_REDIS_SERVER.*RUSHHPC_REDIS_URL") as e:
            server.start()
        assert "--redis-server" not in str(e.value)  # a flag of `rushhpc redis start`, not of this interface
    finally:
        server.remove_dir()


def test_embedded_redis_refuses_a_redis_older_than_6_2(tmp_path, monkeypatch):
    """The embedded Redis used the first redis-server on PATH whatever its version; rushhpc needs 6.2
    (BLMOVE, ACL rules): an older one is named in the error instead of failing later, at a worker's pop."""
    from rushhpc.server import binary
    from rushhpc.server.embedded import EmbeddedRedis

    old = tmp_path / "redis-server"
    old.write_text("#!/bin/sh\necho 'Redis server v=5.0.7 sha=00000000:0 malloc=libc bits=64'\n")
    old.chmod(0o755)
    monkeypatch.setattr(binary, "_candidates", lambda: [str(old)])
    server = EmbeddedRedis()
    try:
        with pytest.raises(RushConfigError, match=r"version 5\.0\.7, needs >= 6\.2"):
            server.start()
    finally:
        server.remove_dir()


def test_remote_redis_without_password_is_refused(monkeypatch):
    with pytest.raises(RushConfigError, match="no password is configured"):
        rsh("x", config="redis://192.0.2.1:6379")  # TEST-NET-1: refused before any connection is tried
