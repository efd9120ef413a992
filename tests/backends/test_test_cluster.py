"""The SLURM test cluster itself (scripts/slurm-cluster.sh): status tells the truth, the lock keeps
other users out, ports in use are named, and the cluster lives next to a system MariaDB, munged and
another SLURM cluster on /etc/slurm without touching them.

Every test here owns the cluster (`cluster_owner`: exclusive lock, restored afterwards).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import pytest
from support import system_services, wait_until
from support.slurm_cluster import SCRIPT


def test_status_matches_reality(cluster_owner):
    st = cluster_owner.status()
    assert st.ok, st.text
    assert cluster_owner.truth_problems(st) == [], st.text
    assert all(st.pids[d] for d in ("munged", "slurmctld", "slurmd-n1", "slurmd-n2", "slurmd-n3")), st.text
    # every file the configuration names is the cluster's own (nothing in /etc/slurm, /run, /var/log)
    paths = set(re.findall(r"=(/[^\s,()]+)", cluster_owner.conf.read_text()))
    assert paths and {p for p in paths if not p.startswith(str(cluster_owner.dir) + "/")} <= {"/bin/true"}
    assert f"held by: {os.getpid()} " in st.text  # status names the lock's holder: this test


def test_status_after_stop_and_start(cluster_owner):
    c = cluster_owner
    before = c.status()
    out = c.script("stop")
    assert out.returncode == 0, out.stderr
    st = c.status()
    assert not st.ok and "slurmctld: not answering" in st.text
    assert set(st.pids.values()) == {None}, st.text               # every daemon: "not running"
    assert c.our_processes() == {}                                # ... and really none runs
    for daemon, port in c.ports().items():
        assert c.listening_pids(port) == set(), f"{daemon}'s port {port} is still held"
    for daemon, pid in before.pids.items():
        assert pid is None or not c.is_ours(pid, daemon)
    out = c.script("start")
    assert out.returncode == 0, out.stderr
    st = c.status()
    assert st.ok and c.truth_problems(st) == [], st.text


def test_status_names_a_daemon_whose_pid_file_is_gone(cluster_owner):
    """A daemon without its pid file still runs: status says so (exit 1); start repairs the pid file."""
    c = cluster_owner
    pid = c.status().pids["slurmctld"]
    c.pidfile("slurmctld").unlink()
    st = c.status()
    assert not st.ok and st.orphans == {"slurmctld": pid}, st.text
    assert "pid file" in st.text and "missing" in st.text
    assert c.truth_problems(st) == [], st.text
    out = c.script("start")
    assert out.returncode == 0, out.stderr
    assert int(c.pidfile("slurmctld").read_text()) == pid      # the same slurmctld, adopted
    st = c.status()
    assert st.ok and st.pids["slurmctld"] == pid and st.orphans == {}, st.text


def test_the_lock_keeps_other_users_out(cluster_owner):
    c = cluster_owner
    env = {**c.client_env(), "RUSHHPC_TEST_CLUSTER_LOCK_WAIT": "1"}
    env.pop("RUSHHPC_TEST_CLUSTER_LOCK_FD", None)
    # someone else (no descriptor of ours) must wait for the owner, and is told who holds the lock
    t = time.monotonic()
    out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=60, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and time.monotonic() - t < 30, out.stderr
    assert "lock" in out.stderr and f"{os.getpid()} (" in out.stderr and "WRITE" in out.stderr, out.stderr
    # a descriptor that is not the lock is refused
    out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                         timeout=60, env={**env, "RUSHHPC_TEST_CLUSTER_LOCK_FD": "0"}, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "is not an open descriptor" in out.stderr, out.stderr
    # the owner itself runs the script with its descriptor
    out = c.script("start")
    assert out.returncode == 0, out.stderr


def test_a_test_using_the_cluster_holds_off_restarts(cluster_owner):
    """A test using the cluster holds the lock shared: start/stop wait for it."""
    c = cluster_owner
    c.release()
    c.share()
    try:
        env = {**c.client_env(), "RUSHHPC_TEST_CLUSTER_LOCK_WAIT": "1"}
        out = subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True,
                             text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert out.returncode == 1 and "READ" in out.stderr, out.stderr
        assert c.status().ok  # nothing was stopped
    finally:
        c.release()
        c.own()  # back to the owner fixture's exclusive lock


def test_a_port_in_use_is_named(cluster_owner):
    c = cluster_owner
    port = c.ports()["slurmd-n3"]
    out = c.script("node-kill", "3")
    assert out.returncode == 0, out.stderr
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        wait_until(lambda: _try_bind(blocker, port), 10, what=f"port {port} to be free")
        blocker.listen()
        out = c.script("node-restart", "3")
        assert out.returncode == 1
        assert f"port {port}" in out.stderr and f"pid {os.getpid()}" in out.stderr, out.stderr
        assert "RUSHHPC_TEST_CLUSTER_PORT_BASE" in out.stderr
    finally:
        blocker.close()
    out = c.script("node-restart", "3")
    assert out.returncode == 0, out.stderr


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False


@pytest.mark.coexist
def test_coexists_with_system_services(cluster_owner):
    """Next to a system MariaDB, the system munged and another SLURM cluster on /etc/slurm (found
    running, or started as stand-ins when RUSHHPC_TEST_COEXIST=1): stopping and starting the test
    cluster leaves them running and answering, and /etc/slurm and /etc/munge unchanged."""
    c = cluster_owner
    services = system_services.SystemServices().start(create=os.environ.get("RUSHHPC_TEST_COEXIST") == "1")
    try:
        names = set(services.found) | set(services.started)
        if not names:
            pytest.skip("no system MariaDB, munged or /etc/slurm cluster runs here "
                        f"({'; '.join(services.notes)}); RUSHHPC_TEST_COEXIST=1 starts stand-ins (as root)")
        pids = services.pids()
        assert services.check() == []

        out = c.script("stop")
        assert out.returncode == 0, out.stderr
        assert c.our_processes() == {}
        assert services.check() == [] and services.pids() == pids  # nothing of theirs was stopped

        out = c.script("start")
        assert out.returncode == 0, out.stderr
        st = c.status()
        assert st.ok and c.truth_problems(st) == [], st.text
        assert services.check() == [] and services.pids() == pids

        # each cluster answers its own users: ours through SLURM_CONF, theirs through /etc/slurm
        job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"], capture_output=True,
                             text=True, timeout=60, env=c.client_env())
        assert job.returncode == 0, job.stderr
        show = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, env=c.client_env())
        assert re.search(r"^ClusterName\s*=\s*rushhpc$", show.stdout, re.M)
        if "slurmctld" in names:
            assert system_services.slurm_cluster_name() not in (None, "rushhpc")
            assert system_services.slurm_runs_a_job()
        assert services.check() == []
    finally:
        started = dict(services.started)
        services.stop()
    for name, pid in started.items():  # the stand-ins were stopped by their pids
        assert system_services.proc_comm(pid) != name
