"""Configuration: Redis errors, network ids, the plan, YAML plan files, the embedded Redis."""

from __future__ import annotations

import pytest
from support import free_port

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


def test_yaml_plan_file(tmp_path, monkeypatch, redis_server):
    f = tmp_path / "plan.yaml"
    f.write_text(f"n_workers: 2\nconfig:\n  host: 127.0.0.1\n  port: {redis_server.port}\n"
                 f"  password: {redis_server.password}\nheartbeat_period: 1\nheartbeat_expire: 5\n")
    monkeypatch.setenv("RUSHHPC_CONFIG", str(f))
    assert rush_available() and rush_config()["n_workers"] == 2
    assert rsh("yamlplan").config.port == redis_server.port


def test_env_url(redis_server, monkeypatch):
    monkeypatch.setenv("RUSHHPC_REDIS_URL", redis_server.config.url())
    assert rsh("envurl").config.port == redis_server.port


