"""TLS end to end: ``rediss://`` with a CA file and client certificates through the manager,
workers, heartbeats and the launchers that can run here (local, script, PBS emulator,
submitit's local executor, SSH to a private sshd).

The server is redis-server's own TLS port (``port 0``: no plain port), configured through
stdin with ``tls-auth-clients yes``, and certificates signed by a CA the test makes with
the openssl CLI. It is stopped by its pid at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import cloudpickle
import pytest
from support import free_port, tls_redis_binary, wait_until

import rushhpc
from rushhpc import RushConfigError, RushWorker, queue_loop, redis_config, rush_plan
from rushhpc.store.connection import read_credentials, write_credentials
from rushhpc.worker.heartbeat import start_heartbeat

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 4}


def double(x):
    return {"y": 2 * x}


class TlsRedis:
    def __init__(self, tmp: Path, ca: dict[str, Path]):
        binary = tls_redis_binary()
        self.port = free_port()
        self.password = secrets.token_hex(16)
        conf = [
            "port 0", f"tls-port {self.port}", "bind 127.0.0.1", f'dir "{tmp}"', 'save ""', "appendonly no",
            f'logfile "{tmp / "redis.log"}"', f'requirepass "{self.password}"',
            f'tls-cert-file "{ca["server"]}"', f'tls-key-file "{ca["server_key"]}"',
            f'tls-ca-cert-file "{ca["ca"]}"', "tls-auth-clients yes",
        ]
        self.proc = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n".join(conf).encode())
        self.proc.stdin.close()
        self.config = redis_config(url=f"rediss://127.0.0.1:{self.port}/0", password=self.password,
                                   tls_ca=ca["ca"], tls_cert=ca["client"], tls_key=ca["client_key"])
        self.log = tmp / "redis.log"
        wait_until(self._up, 15, what=f"TLS redis-server on {self.port}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log.read_text() if self.log.exists() else ''}")
        try:
            self.config.connect().close()
            return True
        except RushConfigError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by its pid
            self.proc.wait(10)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, test_ca):
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis"), test_ca)
    yield server
    server.stop()


@pytest.fixture
def tls_config(tls_server):
    return tls_server.config


@pytest.fixture
def tls_rush(tls_config):
    made = []

    def make(**plan) -> rushhpc.Rush:
        if plan:
            rush_plan(config=tls_config, **plan)
        r = rushhpc.Rush("tls-" + uuid.uuid4().hex[:8], config=tls_config)
        made.append(r)
        return r

    yield make
    for r in made:
        r.reset()
        r.close()
        assert list(r.connector.scan_iter(match=r.keys.pattern)) == []


def assert_no_secret_in_ps(password: str, key: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert password not in ps
    body = "".join(line for line in key.read_text().splitlines() if "-----" not in line)
    assert body[:40] not in ps


# ---------------------------------------------------------------- configuration
def test_config_carries_tls_files(test_ca, tmp_path, monkeypatch):
    cfg = redis_config(url="rediss://:pw-secret@127.0.0.1:7000/2", tls_ca=test_ca["ca"], tls_cert=test_ca["client"],
                       tls_key=test_ca["client_key"])
    assert cfg.tls and (cfg.tls_ca, cfg.tls_cert, cfg.tls_key) == tuple(
        str(test_ca[k]) for k in ("ca", "client", "client_key"))
    assert "pw-secret" not in repr(cfg) and "pw-secret" not in str(cfg) and "pw-secret" not in cfg.public_url()
    # the URL carries the paths (redis-py's names), so an URL alone is enough
    assert "ssl_ca_certs=" in cfg.url() and redis_config(cfg.url()) == cfg
    # the credentials file a worker reads carries them, 0600
    path = write_credentials(tmp_path / "creds.json", cfg)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(path.read_text())
    assert doc["tls_ca"] == str(test_ca["ca"]) and doc["tls_key"] == str(test_ca["client_key"])
    assert read_credentials(path) == cfg
    # TLS files mean TLS; a relative path becomes absolute (a worker runs elsewhere)
    monkeypatch.chdir(test_ca["ca"].parent)
    rel = redis_config(url="redis://127.0.0.1:7000", tls_ca=test_ca["ca"].name)
    assert rel.tls and rel.tls_ca == str(test_ca["ca"])
    with pytest.raises(RushConfigError, match="contradicts"):
        redis_config(url="redis://127.0.0.1:7000", tls=False, tls_ca=test_ca["ca"])


def test_key_file_must_be_private(test_ca, tmp_path):
    key = tmp_path / "client.key"
    shutil.copy(test_ca["client_key"], key)
    key.chmod(0o640)
    with pytest.raises(RushConfigError, match=f"chmod 600 {key}"):
        redis_config(url="rediss://127.0.0.1:7000", tls_ca=test_ca["ca"], tls_cert=test_ca["client"], tls_key=key)
    with pytest.raises(RushConfigError, match="chmod 600"):  # a credentials file naming it too
        read_credentials(_creds(tmp_path, tls_ca=str(test_ca["ca"]), tls_cert=str(test_ca["client"]), tls_key=str(key)))
    with pytest.raises(RushConfigError, match="needs tls_cert"):
        redis_config(url="rediss://127.0.0.1:7000", tls_key=test_ca["client_key"])
    with pytest.raises(RushConfigError, match="does not exist"):
        redis_config(url="rediss://127.0.0.1:7000", tls_ca=tmp_path / "nope.crt")
    with pytest.raises(RushConfigError, match="unknown query parameter"):
        redis_config(url="rediss://127.0.0.1:7000?ssl_cert_reqs=none")


def _creds(tmp_path: Path, **fields: str) -> Path:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"url": "rediss://:x@127.0.0.1:7000/0", **fields}))
    p.chmod(0o600)
    return p


def test_refusals_name_the_fix(tls_server, test_ca):
    base = f"rediss://127.0.0.1:{tls_server.port}/0"
    pw = tls_server.password
    with pytest.raises(RushConfigError, match="client certificate") as e:
        redis_config(url=base, password=pw, tls_ca=test_ca["ca"]).connect()
    assert pw not in str(e.value)
    with pytest.raises(RushConfigError, match="not signed by the CA file"):
        redis_config(url=base, password=pw, tls_ca=test_ca["stranger"], tls_cert=test_ca["client"],
                     tls_key=test_ca["client_key"]).connect()
    with pytest.raises(RushConfigError, match="rediss://"):
        redis_config(url=base.replace("rediss", "redis"), password=pw).connect()
    with pytest.raises(RushConfigError, match="refused the credentials") as e:
        redis_config(url=base, password="wrong-one", tls_ca=test_ca["ca"], tls_cert=test_ca["client"],
                     tls_key=test_ca["client_key"]).connect()
    assert "wrong-one" not in str(e.value)


# ---------------------------------------------------------------- manager, workers, heartbeats
def test_local_workers_and_heartbeats_over_tls(tls_rush, tls_server, test_ca):
    rush = tls_rush()
    ids = rush.start_local_workers(queue_loop, n_workers=2, fun=double, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    # every worker's heartbeat process beats over TLS (its key is alive)
    wait_until(lambda: all(rush.worker_info["heartbeat_alive"]), 20, what="heartbeats over TLS")
    keys = rush.push_tasks([{"x": i} for i in range(20)])
    rush.wait_for_tasks(keys, timeout=60)
    assert sorted(rush.fetch_finished_tasks()["y"]) == [2 * i for i in range(20)]
    assert rush.detect_lost_workers() == []
    assert_no_secret_in_ps(tls_server.password, test_ca["client_key"])
    # a kill goes through the heartbeat's BLPOP over TLS
    rush.stop_workers(type="kill")
    assert set(rush.killed_worker_ids) == set(ids)


def test_heartbeat_takes_a_config(tls_rush, tls_config):
    """start_heartbeat accepts the RedisConfig itself (TLS files travel on its stdin)."""
    rush = tls_rush()
    rush.create()
    w = RushWorker(rush.network_id, config=tls_config)  # an in-process worker, no heartbeat of its own
    hb = start_heartbeat(tls_config, rush.network_id, w.worker_id, period=0.3, expire=3)
    try:
        wait_until(lambda: rush.connector.exists(rush.keys.heartbeat(w.worker_id)), 15, what="a beat over TLS")
        w.set_terminated()  # the heartbeat sees it and ends by itself (it never signals this process)
        assert hb.wait(15) == 0
    finally:
        if hb.poll() is None:
            hb.kill()
            hb.wait(5)
        w.close()


def test_script_worker_with_credentials_file_and_env(tls_rush, tls_config):
    rush = tls_rush()
    for credentials in ("file", "env"):
        cmd = rush.worker_script(queue_loop, fun=double, credentials=credentials, **HB)
        env = dict(os.environ)
        if credentials == "env":
            env["RUSHHPC_REDIS_URL"] = tls_config.url()  # ...?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...
        proc = subprocess.Popen(cmd, shell=True, env=env, start_new_session=True)
        try:
            wait_until(lambda: rush.n_running_workers == 1, 30, what=f"a script worker ({credentials})")
            keys = rush.push_tasks([{"x": 5}])
            rush.wait_for_tasks(keys, timeout=30)
            rush.stop_workers(type="terminate")
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
    assert rush.fetch_finished_tasks()["y"].tolist() == [10, 10]


def test_pbs_workers_over_tls(tls_rush, monkeypatch, tmp_path):
    from support.batch_backends import PbsBackend, require

    require("pbs", PbsBackend.available(), "tests/pbs_emulator is needed")
    monkeypatch.setenv("PATH", f"{PbsBackend.bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_EMU_HOME", str(tmp_path / "pbs-emu"))
    rush = tls_rush(worker_type="pbs", start_worker_timeout=60, launcher_options={
        "poll_interval": 0.5, "max_poll_interval": 2, "startup_grace": 20, "time": "00:10:00"}, **HB)
    try:
        ids = rush.start_workers(queue_loop, n_workers=2, fun=double)
        rush.wait_for_workers(worker_ids=ids, timeout=60)
        keys = rush.push_tasks([{"x": i} for i in range(6)])
        rush.wait_for_tasks(keys, timeout=60)
        assert sorted(rush.fetch_finished_tasks()["y"]) == [0, 2, 4, 6, 8, 10]
        assert rush.detect_lost_workers(poll_scheduler=True) == []
    finally:
        rush.stop_workers(type="kill")
        PbsBackend().cleanup(f"rushhpc-{rush.network_id}")


def test_submitit_local_workers_over_tls(tls_rush):
    pytest.importorskip("submitit")
    rush = tls_rush(worker_type="submitit", launcher_options={"cluster": "local"}, start_worker_timeout=90, **HB)
    ids = rush.start_workers(queue_loop, n_workers=1, fun=double)
    rush.wait_for_workers(worker_ids=ids, timeout=90)
    keys = rush.push_tasks([{"x": 4}])
    rush.wait_for_tasks(keys, timeout=60)
    assert rush.fetch_finished_tasks()["y"].tolist() == [8]
    rush.stop_workers(type="kill")


def test_ssh_workers_over_tls(tls_rush, tmp_path_factory):
    if not os.path.exists("/usr/sbin/sshd"):
        if os.environ.get("RUSHHPC_REQUIRE_SSH") == "1":
            pytest.fail("/usr/sbin/sshd is needed (RUSHHPC_REQUIRE_SSH=1)")
        pytest.skip("/usr/sbin/sshd is not installed")
    from support.ssh import Sshd

    sshd = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        rush = tls_rush(worker_type="ssh", launcher_options=sshd.options(), **HB)
        ids = rush.start_workers(queue_loop, n_workers=1, fun=double)
        rush.wait_for_workers(worker_ids=ids, timeout=60)
        keys = rush.push_tasks([{"x": 3}])
        rush.wait_for_tasks(keys, timeout=60)
        assert rush.fetch_finished_tasks()["y"].tolist() == [6]
        rush.stop_workers(type="kill")
    finally:
        sshd.stop()


def test_cli_options(tls_rush, tls_server, test_ca):
    rush = tls_rush()
    rush.push_tasks([{"x": 1}])
    pwfile = Path(test_ca["ca"]).parent / "tls-redis.pw"
    pwfile.write_text(tls_server.password + "\n")
    pwfile.chmod(0o600)
    base = ["--redis", f"rediss://127.0.0.1:{tls_server.port}/0", "--password-file", str(pwfile)]
    tls = ["--tls-ca", str(test_ca["ca"]), "--tls-cert", str(test_ca["client"]), "--tls-key", str(test_ca["client_key"])]
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL")}
    out = subprocess.run([sys.executable, "-m", "rushhpc", "tasks", "-n", rush.network_id, "--json", *base, *tls],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["queued"] == 1
    out = subprocess.run([sys.executable, "-m", "rushhpc", "tasks", "-n", rush.network_id, *base,
                          "--tls-ca", str(test_ca["ca"])], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "client certificate" in out.stderr
    assert tls_server.password not in out.stderr + out.stdout



def test_heartbeat_process_over_tls(tls_server, tls_config, test_ca, tmp_path):
    """The heartbeat (rushhpc/worker/beat.py, the ssl module) verifies the server's certificate against
    the CA file and shows its client certificate; with another CA it never beats. Its size with
    TLS: the ssl module and OpenSSL add ~6 MiB to the ~11 MiB without (issue 12's 15 MiB is met
    without TLS only)."""
    from support.heartbeats import StandIn, vm_rss_mib

    nid = "tls-hb-" + uuid.uuid4().hex[:8]
    c = tls_config.client()
    s = StandIn(tls_config, nid, "w-1", tmp_path)
    try:
        wait_until(lambda: c.exists(s.heartbeat_key), 15, what="a beat over TLS")
        rss = vm_rss_mib(s.hb_pid)
        print(f"resident: heartbeat over TLS {rss:.1f} MiB")
        assert rss < 20, f"heartbeat RSS over TLS {rss:.1f} MiB"
        assert "Redis error" not in s.log(), s.log()
    finally:
        s.stop()
    stranger = redis_config(url=f"rediss://127.0.0.1:{tls_server.port}/0", password=tls_server.password,
                            tls_ca=test_ca["stranger"], tls_cert=test_ca["client"], tls_key=test_ca["client_key"])
    bad = StandIn(stranger, nid, "w-2", tmp_path, register=tls_config)
    try:
        wait_until(lambda: "certificate verify failed" in bad.log(), 15, what="the refused certificate")
        assert not c.exists(bad.heartbeat_key) and bad.proc.poll() is None
        assert tls_server.password not in bad.log()
    finally:
        bad.stop()
        c.delete(s.heartbeat_key, s.keys.worker("w-1"), s.keys.worker("w-2"))
        c.close()
