"""Issue 20, the command line's part: errors in the CLI's words (5f), the rough edges of the
commands (6) and the plots (8). Every test runs the real CLI (or the real code) against a real Redis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rushhpc import redis_config
from rushhpc.config import RedisUnusableError, in_words_of
from rushhpc.errors import RushConfigError


def cli(*args, config=None, cwd=None, env_extra=None, timeout=60):
    env = dict(os.environ)
    env.pop("RUSHHPC_REDIS_URL", None)
    if config is not None:
        env["RUSHHPC_REDIS_URL"] = config.url()
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A real TCP server that accepts connections and never answers a byte (a wrong port, a stuck server)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never read from nor written to

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


# --------------------------------------------------------------------------------------------------
# 5f: connection and password errors in the words of the interface the user came through
# --------------------------------------------------------------------------------------------------

# issue 20 defect 5f: on the CLI a missing password names --password-file, not redis_config(...)
def test_cli_missing_password_names_the_flag(redis_server):
    out = cli("networks", "--redis", f"redis://127.0.0.1:{redis_server.port}/0")
    assert out.returncode == 2, out.stderr
    assert "requires a password" in out.stderr and "--password-file FILE" in out.stderr
    assert "redis_config(" not in out.stderr and "Traceback" not in out.stderr


# issue 20 defect 5f: a wrong password on the CLI names --password-file, and never the password
def test_cli_wrong_password_names_the_flag(redis_server, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("not-the-password\n")
    pw.chmod(0o600)
    out = cli("workers", "-n", "x", "--redis", f"redis://127.0.0.1:{redis_server.port}/0", "--password-file", str(pw))
    assert out.returncode == 2
    assert "refused the credentials" in out.stderr and "--password-file" in out.stderr
    assert "redis_config(" not in out.stderr and "not-the-password" not in out.stderr


# issue 20 defect 5f: an unreachable Redis on the CLI: no "embedded Redis" (the CLI never starts one);
# --redis / RUSHHPC_REDIS_URL and `rushhpc redis start` instead
def test_cli_unreachable_redis_says_how_to_name_or_start_one():
    port = closed_port()
    out = cli("networks", "--redis", f"redis://127.0.0.1:{port}/0")
    assert out.returncode == 2
    err = out.stderr
    assert f"cannot reach Redis at 127.0.0.1:{port}" in err and "embedded" not in err
    assert "--redis" in err and "RUSHHPC_REDIS_URL" in err and "rushhpc redis start" in err
    assert ".." not in err  # redis-py's "Connection refused." is not followed by a second period


# issue 20 defect 5f: the Python API keeps its wording; every wording rides on the error
def test_python_wording_stays_and_every_interface_has_its_own(redis_server):
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=redis_server.port).connect()
    assert isinstance(e.value, RushConfigError)
    assert "redis_config(password_file=...)" in str(e.value)
    assert "--password-file FILE" in e.value.for_interface("cli")
    assert "redis.password_file" in e.value.for_interface("sweep")
    assert in_words_of(e.value, "cli") == e.value.for_interface("cli")
    port = closed_port()
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=port).connect()
    assert "Leave the config unset to use a private embedded Redis" in str(e.value)
    assert "redis: embedded" in e.value.for_interface("sweep") and "embedded" not in e.value.for_interface("cli")
    # an error raised for an interface keeps its words when someone else translates it
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=port).connect(interface="sweep")
    assert "redis: embedded" in str(e.value) and in_words_of(e.value, "cli") == str(e.value)
    import pickle

    back = pickle.loads(pickle.dumps(e.value))
    assert str(back) == str(e.value) and back.for_interface("cli") == e.value.for_interface("cli")


# issue 20 defect 5f: a sweep's unreachable `redis:` names `redis: embedded`, not "leave the config unset"
def test_sweep_unreachable_redis_names_the_yaml_key(tmp_path):
    port = closed_port()
    (tmp_path / "f.py").write_text("def f(x):\n    return {'y': x}\n")
    (tmp_path / "s.yaml").write_text(
        "objective: f.py:f\nspace:\n  x: {type: float, low: 0, high: 1}\nstrategy: random\n"
        f"budget: {{evaluations: 2}}\nworkers: {{n: 1}}\nredis: {{url: 'redis://127.0.0.1:{port}/0'}}\noutput: out\n")
    out = cli("sweep", "s.yaml", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"cannot reach Redis at 127.0.0.1:{port}" in out.stderr and "redis: embedded" in out.stderr
    assert "Leave the config unset" not in out.stderr and "--redis" not in out.stderr


# issue 20 defect 5f: a port that accepts and never answers is named as such, not "is redis-server running"
def test_a_silent_listener_is_not_called_unreachable(silent_port):
    cfg = redis_config(host="127.0.0.1", port=silent_port)
    with pytest.raises(RedisUnusableError) as e:
        cfg.connect()
    msg = str(e.value)
    assert f"something listens on 127.0.0.1:{silent_port} but does not answer as Redis" in msg
    assert "is redis-server running" not in msg.lower() and "wrong port" in msg and "TLS" in msg
    assert "stuck" in msg
    t = time.monotonic()
    out = cli("networks", "--redis", f"redis://127.0.0.1:{silent_port}/0")
    assert out.returncode == 2 and time.monotonic() - t < 30
    assert "does not answer as Redis" in out.stderr and "--redis URL" in out.stderr
    assert "redis_config(" not in out.stderr and "is redis-server running" not in out.stderr.lower()
