"""SSH workers against a real, private sshd on 127.0.0.1 (key authentication set up here).

The sshd runs from a private config in a temporary directory on a free port and is
stopped by its pid at the end. Without /usr/sbin/sshd the module is skipped, unless
RUSHHPC_REQUIRE_SSH=1 (then it fails).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import stat
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest
from support import free_port, wait_until
from support.ssh import pid_running

import rushhpc
from rushhpc import RushConfigError, RushWorkerError, queue_loop, rush_plan
from rushhpc.launchers.ssh import SshLauncher, assign_hosts, parse_host, remote_path

# Workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.3, "heartbeat_expire": 1.5}


def busy_loop(rush, seconds: float = 120):
    """A long evaluation that never looks at rush.terminated (only a real kill stops it)."""
    rush.push_running_tasks([{"x": 1}])
    time.sleep(seconds)


# ---------------------------------------------------------------- the sshd


@pytest.fixture
def make_rush(config):
    """Managers whose plan says worker_type="ssh" with these launcher options; reset at the end."""
    made = []

    def make(launcher_options: dict) -> rushhpc.Rush:
        rush_plan(worker_type="ssh", launcher_options=launcher_options)
        r = rushhpc.Rush("t-" + uuid.uuid4().hex[:10], config=config)
        made.append(r)
        return r

    yield make
    for r in made:
        r.reset()
        r.close()
        assert list(r.connector.scan_iter(match=r.keys.pattern)) == []


@pytest.fixture
def ssh_calls(monkeypatch):
    """Every ssh argv and stdin the launcher used."""
    calls: list[tuple[list[str], bytes | None]] = []
    original = SshLauncher._run

    def spy(self, argv, stdin, timeout):
        calls.append((list(argv), stdin))
        return original(self, argv, stdin, timeout)

    monkeypatch.setattr(SshLauncher, "_run", spy)
    return calls


def _all_cmdlines() -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


# ---------------------------------------------------------------- no sshd needed
def test_hosts_parsing_and_placement():
    assert parse_host("node1") == parse_host("node1")
    h = parse_host("me@node2:2222")
    assert (h.user, h.host, h.port, h.destination, h.args()) == ("me", "node2", 2222, "me@node2", ["-p", "2222"])
    assert parse_host("[::1]:22").host == "::1" and parse_host("[::1]:22").port == 22
    assert parse_host("fe80::1").port is None
    for bad in ["", "-oProxyCommand=x", "a b", "node:port", "node:0", "@node"]:
        with pytest.raises(RushConfigError):
            parse_host(bad)
    a, b = parse_host("a"), parse_host("b")
    assert [x.spec for x in assign_hosts([a, b], 5, None)] == ["a", "b", "a", "b", "a"]
    assert [x.spec for x in assign_hosts([a, b], 3, 2)] == ["a", "a", "b"]
    with pytest.raises(RushConfigError, match="do not fit"):
        assign_hosts([a, b], 5, 2)
    assert remote_path("~/runs/x y") == "\"$HOME\"/'runs/x y'"
    assert remote_path("/a'b") == "'/a'\"'\"'b'"


def test_options_are_checked(rush):
    with pytest.raises(RushConfigError, match="unknown ssh launcher option"):
        SshLauncher(rush, {"hosts": ["a"], "hostz": 1})
    with pytest.raises(RushConfigError, match="needs hosts"):
        SshLauncher(rush, {"python": "python3"})._settings(None)


# ---------------------------------------------------------------- against the sshd
def test_queue_loop_over_ssh(sshd, make_rush, ssh_calls):
    opts = sshd.options(hosts=[f"{sshd.user}@127.0.0.1", "127.0.0.1"])
    rush = make_rush(opts)
    password = rush.config.password
    assert password
    ids = rush.start_workers(queue_loop, n_workers=2, fun=lambda x: {"y": x * x}, **HB)
    assert len(ids) == 2 and len(ssh_calls) == 2  # one ssh per worker, returned at once
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    keys = rush.push_tasks([{"x": i} for i in range(20)])
    rush.wait_for_tasks(keys, timeout=30)
    assert sorted(rush.fetch_finished_tasks()["y"]) == sorted(i * i for i in range(20))

    info = rush.worker_info.set_index("worker_id")
    assert (info["launcher"] == "ssh").all() and (info["state"] == "running").all()
    assert set(info["hostname"]) == {os.uname().nodename}
    records = {w: rush.record(w) for w in ids}
    assert {r.extra["host"] for r in records.values()} == set(opts["hosts"])  # round-robin
    assert all(r.launcher == "ssh" and r.job_id is None for r in records.values())
    # the pid the launch printed is the worker's own (setsid did not fork)
    assert all(records[w].extra["pid"] == info.loc[w, "pid"] for w in ids)

    # no secret in any argv on this machine (manager side and "remote" side alike) ...
    assert not [c for c in _all_cmdlines() if password in c]
    for argv, stdin in ssh_calls:
        assert password not in " ".join(argv) and stdin is None  # shared run dir: nothing sent
        assert argv[argv.index("--") + 1] in opts["hosts"]
    # ... nor in the workers' output files
    for w in ids:
        for ext in ("out", "err"):
            path = rush.run_dir / "workers" / f"{w}.{ext}"
            assert path.exists() and password not in path.read_text(errors="replace")

    assert sorted(rush.stop_workers(type="terminate")) == sorted(ids)
    wait_until(lambda: sorted(rush.terminated_worker_ids) == sorted(ids), 20, what="terminated ssh workers")
    wait_until(lambda: not any(pid_running(int(p)) for p in info["pid"]), 10, what="worker processes to exit")


def test_kill_through_heartbeat(sshd, make_rush, caplog):
    rush = make_rush(sshd.options(workers_per_host=2))
    ids = rush.start_workers(busy_loop, n_workers=2, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.n_running_tasks == 2, 20, what="two running tasks")
    info = rush.worker_info
    pids = [int(p) for p in info["pid"]] + [int(p) for p in info["heartbeat_pid"]]
    assert all(pid_running(p) for p in pids)
    with caplog.at_level(logging.WARNING, logger="rushhpc.launchers"):
        assert sorted(rush.stop_workers(type="kill")) == sorted(ids)
    assert sorted(rush.killed_worker_ids) == sorted(ids)
    failed = rush.fetch_failed_tasks()
    assert failed["condition"].tolist() == ["worker was killed"] * 2
    wait_until(lambda: not any(pid_running(p) for p in pids), 10, what="killed workers and heartbeats to exit")
    assert "SIGKILLed over ssh" not in caplog.text  # the heartbeats did it


def test_ssh_kill_when_heartbeat_cannot(sshd, make_rush, caplog):
    """A frozen heartbeat cannot act on the kill list: the second stage kills over ssh."""
    rush = make_rush(sshd.options(kill_wait=0.5))
    ids = rush.start_workers(busy_loop, n_workers=1, heartbeat_period=5, heartbeat_expire=30)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.n_running_tasks == 1, 20, what="running task")
    info = rush.worker_info.iloc[0]
    pid, hb_pid = int(info["pid"]), int(info["heartbeat_pid"])
    os.kill(hb_pid, signal.SIGSTOP)
    with caplog.at_level(logging.WARNING, logger="rushhpc.launchers"):
        rush.stop_workers(type="kill")
    assert "SIGKILLed over ssh" in caplog.text and ids[0] in caplog.text
    wait_until(lambda: not pid_running(pid) and not pid_running(hb_pid), 10, what="worker's process group to die")
    assert rush.killed_worker_ids == ids and rush.fetch_failed_tasks()["condition"].tolist() == ["worker was killed"]


def test_remote_sigkill_is_found_lost(sshd, make_rush):
    rush = make_rush(sshd.options())
    ids = rush.start_workers(busy_loop, n_workers=1, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    wait_until(lambda: rush.n_running_tasks == 1, 20, what="running task")
    pid = int(rush.worker_info["pid"].item())
    out = sshd.run(f"kill -KILL {pid}")
    assert out.returncode == 0, out.stderr
    lost = wait_until(lambda: rush.detect_lost_workers(), 15, interval=0.2, what="heartbeat to expire")
    assert lost == ids and rush.lost_worker_ids == ids
    assert rush.worker_info["reason"].item() == "heartbeat_expired"
    assert rush.n_failed_tasks == 1 and "lost" in rush.fetch_failed_tasks()["condition"].item()


def test_unreachable_host_is_named_and_stops_the_launch(sshd, make_rush, ssh_calls):
    closed = free_port()
    bad = f"127.0.0.1:{closed}"
    rush = make_rush(sshd.options(hosts=[bad, f"127.0.0.1:{sshd.port}"], ssh_options=sshd.ssh_options(port=False)))
    with pytest.raises(RushWorkerError) as e:
        rush.start_workers(busy_loop, n_workers=2, **HB)
    msg = str(e.value)
    assert repr(bad) in msg and "Connection refused" in msg
    assert len(ssh_calls) == 1  # the second host was not tried
    assert rush.launched_ids == set()


def test_auth_failure_names_host_and_ssh_error(sshd, make_rush):
    rush = make_rush(sshd.options(ssh_options=sshd.ssh_options(key="stranger_key")))
    with pytest.raises(RushWorkerError, match=r"127\.0\.0\.1.*Permission denied"):
        rush.start_workers(busy_loop, n_workers=1, **HB)


def test_failing_setup_line_fails_the_launch(sshd, make_rush):
    rush = make_rush(sshd.options(setup=["echo 'no such module' >&2; false"]))
    with pytest.raises(RushWorkerError, match=r"remote shell failed \(exit 1\): no such module"):
        rush.start_workers(busy_loop, n_workers=1, **HB)


def test_partial_start_keeps_started_workers_known(sshd, make_rush):
    good, bad = f"127.0.0.1:{sshd.port}", f"127.0.0.1:{free_port()}"
    rush = make_rush(sshd.options(hosts=[good, bad], ssh_options=sshd.ssh_options(port=False)))
    with pytest.raises(RushWorkerError, match="keep running") as e:
        rush.start_workers(busy_loop, n_workers=2, **HB)
    started = sorted(rush.launched_ids)
    assert len(started) == 1 and started[0] in str(e.value)
    rush.wait_for_workers(worker_ids=started, timeout=30)
    pid = int(rush.worker_info["pid"].item())
    assert rush.stop_workers(type="kill") == started
    wait_until(lambda: not pid_running(pid), 10, what="the started worker to be killed")


def test_remote_run_dir_gets_credentials_through_stdin(sshd, make_rush, ssh_calls, tmp_path):
    remote_root = tmp_path / "remote run dir's $HOME"  # spaces, a quote and a dollar: quoting must hold
    # python as a command prefix; setup lines run in the remote sh before the worker
    rush = make_rush(sshd.options(remote_run_dir=str(remote_root), python=["env", "RUSHHPC_T=1", sys.executable],
                                  setup=["test -n \"$HOME\""]))
    password = rush.config.password
    ids = rush.start_workers(queue_loop, n_workers=1, fun=lambda x: {"y": -x}, **HB)
    rush.wait_for_workers(worker_ids=ids, timeout=30)
    keys = rush.push_tasks([{"x": 3}])
    rush.wait_for_tasks(keys, timeout=30)
    assert rush.fetch_finished_tasks()["y"].tolist() == [-3]

    remote = remote_root / rush.network_id
    creds = remote / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert creds.read_bytes() == (rush.run_dir / "credentials.json").read_bytes()
    assert not list(remote.glob("credentials.json.tmp.*"))
    key = remote / "signing.key"  # the signing key travels the same way (stdin, 0600), never in argv
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and not list(remote.glob("signing.key.tmp.*"))
    assert key.read_text().strip() == rush.signing_key_file().read_text().strip()
    assert (remote / "workers" / f"{ids[0]}.err").exists()
    assert not (rush.run_dir / "workers" / f"{ids[0]}.err").exists()
    (argv, stdin), = ssh_calls
    assert password not in " ".join(argv) and password.encode() in stdin  # the secret went through stdin only
    script = shlex.split(argv[-1])  # sh -c SCRIPT, one word for the remote login shell
    assert script[:2] == ["sh", "-c"] and len(script) == 3
    assert f"--credentials {shlex.quote(str(creds))}" in script[2]
    assert f"--signing-key {shlex.quote(str(key))}" in script[2]
    assert key.read_text().strip() not in " ".join(argv) and key.read_bytes().strip() in stdin
    assert not [c for c in _all_cmdlines() if key.read_text().strip() in c]
    assert not [c for c in _all_cmdlines() if password in c]
    launcher = rush.launcher("ssh")
    assert launcher.stderr_tail(ids[0]) == (remote / "workers" / f"{ids[0]}.err").read_text().rstrip("\n")
