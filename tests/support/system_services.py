"""Stand-ins for what a contributor's machine may already run next to the test cluster.

- a system MariaDB: ``mariadbd`` from the system's own configuration (``/etc/mysql``: datadir
  ``/var/lib/mysql``, socket ``/run/mysqld/mysqld.sock``, port 3306),
- the system munged: default socket ``/run/munge/munge.socket.2``, key ``/etc/munge/munge.key``,
- another SLURM cluster configured in ``/etc/slurm/slurm.conf``: ``slurmctld`` and one ``slurmd`` on
  the default ports 6817/6818 with the default pid files, plus a ``cgroup.conf`` next to it.

Whatever already runs is used as it is and never stopped; only what `start` started is stopped
(by pid), and only files it wrote are removed.  By hand, as root::

    python tests/support/system_services.py start    # start what is missing, remember what was started
    python tests/support/system_services.py check    # each service answers; /etc/slurm is unchanged
    python tests/support/system_services.py stop     # stop (by pid) and remove only what `start` created

The test ``tests/backends/test_test_cluster.py::test_coexists_with_system_services`` uses the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ETC_SLURM = Path("/etc/slurm")
OTHER_CONF = ETC_SLURM / "slurm.conf"
OTHER_CGROUP = ETC_SLURM / "cgroup.conf"
OTHER_STATE = Path("/var/lib/rushhpc-other-cluster")      # spool, state and logs of the stand-in cluster
STATE_FILE = Path("/run/rushhpc-system-services.json")   # what `start` started (for `check` and `stop`)
MUNGE_SOCKET = "/run/munge/munge.socket.2"
MYSQL_SOCKET = "/run/mysqld/mysqld.sock"
MARK = "# Written by rushhpc tests/support/system_services.py: a stand-in for a system SLURM cluster"


def _run(argv, env=None, timeout=30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def system_env() -> dict:
    """The environment of a user of the machine's own SLURM: no SLURM_CONF, so /etc/slurm/slurm.conf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.pop("RUSHHPC_TEST_CLUSTER_LOCK_FD", None)
    return env


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def proc_comm(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return None  # a zombie is as good as dead
    return Path(f"/proc/{pid}/comm").read_text().strip()


def read_pid(path: str | Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ what answers
def munge_ok() -> bool:
    if not shutil.which("munge"):
        return False
    enc = _run(["munge", "-S", MUNGE_SOCKET, "-n"])
    return enc.returncode == 0 and _run(["unmunge", "-S", MUNGE_SOCKET], input=enc.stdout).returncode == 0


def mariadb_ok() -> bool:
    if not shutil.which("mariadb-admin"):
        return False
    out = _run(["mariadb-admin", f"--socket={MYSQL_SOCKET}", "-uroot", "ping"])
    return "alive" in out.stdout


def slurm_ok() -> bool:
    if not OTHER_CONF.exists() or not shutil.which("scontrol"):
        return False
    ping = _run(["scontrol", "ping"], env=system_env())
    if "is UP" not in ping.stdout:
        return False
    nodes = _run(["sinfo", "-h", "-o", "%T"], env=system_env())
    return nodes.returncode == 0 and any(s in nodes.stdout for s in ("idle", "mix", "alloc"))


def slurm_cluster_name() -> str | None:
    out = _run(["scontrol", "show", "config"], env=system_env())
    for line in out.stdout.splitlines():
        if line.startswith("ClusterName"):
            return line.split("=", 1)[1].strip()
    return None


def slurm_runs_a_job(timeout: float = 60) -> bool:
    """A job submitted to the /etc/slurm cluster completes (accounting off: read with scontrol)."""
    out = _run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"], env=system_env())
    if out.returncode != 0:
        raise RuntimeError(f"sbatch to the /etc/slurm cluster failed: {out.stderr.strip()}")
    job = out.stdout.strip().split(";")[0]

    def state():
        show = _run(["scontrol", "-o", "show", "job", job], env=system_env()).stdout
        m = re.search(r"JobState=(\w+)", show)
        return m and m[1] in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT") and m[1]

    return wait_for(state, timeout, f"job {job} on the /etc/slurm cluster") == "COMPLETED"


def etc_snapshot() -> dict:
    """Path -> (sha256, mode, mtime) of everything under /etc/slurm and /etc/munge."""
    snap = {}
    for root in (ETC_SLURM, Path("/etc/munge")):
        if not root.exists():
            continue
        for p in sorted([root, *root.rglob("*")]):
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            snap[str(p)] = [digest, st.st_mode, st.st_mtime_ns]
    return snap


# ------------------------------------------------------------------ starting the stand-ins
class SystemServices:
    """What runs (``found``), what this object started (``started``: name -> pid), files it wrote."""

    def __init__(self):
        self.found: list[str] = []
        self.started: dict[str, int] = {}
        self.created: list[str] = []
        self.snapshot: dict = {}
        self.notes: list[str] = []

    # ---- persistence for the command line
    def save(self) -> None:
        STATE_FILE.write_text(json.dumps({"found": self.found, "started": self.started, "created": self.created,
                                          "snapshot": self.snapshot, "notes": self.notes}))

    @classmethod
    def load(cls) -> "SystemServices":
        s = cls()
        if STATE_FILE.exists():
            d = json.loads(STATE_FILE.read_text())
            s.found, s.started, s.created = d["found"], {k: int(v) for k, v in d["started"].items()}, d["created"]
            s.snapshot, s.notes = d["snapshot"], d.get("notes", [])
        return s

    def pids(self) -> dict[str, int]:
        """name -> pid of every service that answers, found or started (read from their pid files)."""
        out = dict(self.started)
        files = {"munged": "/run/munge/munged.pid", "mariadbd": "/run/mysqld/mysqld.pid",
                 "slurmctld": "/run/slurmctld.pid", "slurmd": "/run/slurmd.pid"}
        for name in self.found:
            pid = read_pid(files[name])
            if pid:
                out[name] = pid
        return out

    # ---- start
    def start(self, create: bool = True) -> "SystemServices":
        """Use what answers; start the rest when ``create`` (needs root)."""
        try:
            self._munge(create)
            self._mariadb(create)
            self._slurm(create)
        except BaseException:
            self.stop()
            raise
        self.snapshot = etc_snapshot()
        return self

    def _munge(self, create: bool) -> None:
        if munge_ok():
            self.found.append("munged")
            return
        if not create:
            self.notes.append("no system munged answers on " + MUNGE_SOCKET)
            return
        if not Path("/etc/munge/munge.key").exists():
            self.notes.append("no /etc/munge/munge.key: system munged not started")
            return
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        os.chmod("/run/munge", 0o755)
        out = _run(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "/usr/sbin/munged"],
                   stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"system munged did not start: {out.stderr.strip()}")
        pid = wait_for(lambda: read_pid("/run/munge/munged.pid"), 10, "munged.pid")
        self.started["munged"] = pid
        wait_for(munge_ok, 10, "system munged to answer")

    def _mariadb(self, create: bool) -> None:
        if mariadb_ok():
            self.found.append("mariadbd")
            return
        if not create:
            self.notes.append("no system MariaDB answers on " + MYSQL_SOCKET)
            return
        if not Path("/var/lib/mysql/mysql").is_dir():
            self.notes.append("/var/lib/mysql is not initialised: system MariaDB not started")
            return
        if port_open(3306):
            raise RuntimeError("port 3306 is taken but no MariaDB answers on " + MYSQL_SOCKET)
        Path("/run/mysqld").mkdir(exist_ok=True)
        shutil.chown("/run/mysqld", "mysql", "mysql")
        log_path = "/var/log/rushhpc-system-mariadb.log"
        log = open(log_path, "ab")
        self.created.append(log_path)
        # exactly the system's configuration (/etc/mysql), in the foreground: the pid is mariadbd's
        proc = subprocess.Popen(["/usr/sbin/mariadbd", "--user=mysql"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True)
        self.started["mariadbd"] = proc.pid
        wait_for(lambda: proc.poll() is not None or mariadb_ok(), 60, "system MariaDB to answer")
        if proc.poll() is not None:
            raise RuntimeError("system mariadbd exited; see /var/log/rushhpc-system-mariadb.log")

    def _slurm(self, create: bool) -> None:
        if OTHER_CONF.exists():
            if slurm_ok():
                self.found += ["slurmctld", "slurmd"]
            else:
                self.notes.append(f"{OTHER_CONF} exists but its cluster does not answer: left alone")
            return
        if not create:
            self.notes.append(f"no {OTHER_CONF}")
            return
        if not (munge_ok() and shutil.which("slurmctld")):
            self.notes.append("no system munged or no slurmctld: no /etc/slurm cluster started")
            return
        for port in (6817, 6818):
            if port_open(port):
                raise RuntimeError(f"port {port} is taken: not starting a stand-in /etc/slurm cluster")
        host = socket.gethostname()
        for d in ("ctld", "spool", "log"):
            (OTHER_STATE / d).mkdir(parents=True, exist_ok=True)
        self.created.append(str(OTHER_STATE))
        ETC_SLURM.mkdir(exist_ok=True)
        OTHER_CONF.write_text("\n".join([
            MARK, "ClusterName=othercluster", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root",
            "AuthType=auth/munge", f"StateSaveLocation={OTHER_STATE}/ctld", "SlurmctldPidFile=/run/slurmctld.pid",
            "SlurmdPidFile=/run/slurmd.pid", f"SlurmdSpoolDir={OTHER_STATE}/spool",
            f"SlurmctldLogFile={OTHER_STATE}/log/slurmctld.log", f"SlurmdLogFile={OTHER_STATE}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "MpiDefault=none", "MailProg=/bin/true", "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        self.created.append(str(OTHER_CONF))
        # a cgroup.conf, as real installations have: the test cluster must leave it where it is
        OTHER_CGROUP.write_text(MARK + "\nConstrainCores=no\nConstrainRAMSpace=no\n")
        self.created.append(str(OTHER_CGROUP))
        env = system_env()
        for daemon, pidfile in (("slurmctld", "/run/slurmctld.pid"), ("slurmd", "/run/slurmd.pid")):
            out = _run([f"/usr/sbin/{daemon}"], env=env, stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                raise RuntimeError(f"{daemon} for /etc/slurm did not start: {out.stderr.strip()}")
            pid = wait_for(lambda f=pidfile, d=daemon: (p := read_pid(f)) and proc_comm(p) == d and p, 30,
                           f"{daemon} pid file")
            self.started[daemon] = pid
        wait_for(slurm_ok, 60, "the /etc/slurm cluster's node to be idle")

    # ---- check and stop
    def check(self) -> list[str]:
        """Problems (empty when everything found or started still runs and answers, /etc unchanged)."""
        problems = []
        for name, pid in self.pids().items():
            if proc_comm(pid) != name:
                problems.append(f"{name} (pid {pid}) is gone")
        names = set(self.found) | set(self.started)
        if "munged" in names and not munge_ok():
            problems.append("system munged does not answer on " + MUNGE_SOCKET)
        if "mariadbd" in names and not mariadb_ok():
            problems.append("system MariaDB does not answer on " + MYSQL_SOCKET)
        if "slurmctld" in names:
            if not slurm_ok():
                problems.append("the /etc/slurm cluster does not answer (scontrol ping, sinfo)")
            elif slurm_cluster_name() == "rushhpc":
                problems.append("SLURM commands without SLURM_CONF reach the test cluster, not /etc/slurm's")
        now = etc_snapshot()
        if self.snapshot and now != self.snapshot:
            changed = sorted(k for k in set(now) | set(self.snapshot) if now.get(k) != self.snapshot.get(k))
            problems.append(f"/etc/slurm or /etc/munge changed: {changed}")
        return problems

    def stop(self) -> None:
        """Stop, by pid, what this object started (newest first); remove the files it wrote."""
        for name, pid in reversed(list(self.started.items())):
            if proc_comm(pid) != name:
                continue
            os.kill(pid, signal.SIGTERM)
            try:
                wait_for(lambda p=pid, n=name: proc_comm(p) != n, 30, f"{name} (pid {pid}) to exit")
            except RuntimeError:
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        for path in reversed(self.created):
            p = Path(path)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() and (p.name.startswith("rushhpc-") or p.read_text().startswith(MARK)):
                p.unlink()
        self.created.clear()


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "start":
        if STATE_FILE.exists():
            print(f"{STATE_FILE} exists: run 'stop' first", file=sys.stderr)
            return 1
        s = SystemServices().start()
        s.save()
        print(f"found: {s.found}; started: {s.started}; notes: {s.notes}")
        return 0
    if cmd == "check":
        s = SystemServices.load()
        problems = s.check()
        print(f"services: {s.pids()}; " + ("all answer, /etc/slurm unchanged" if not problems else "; ".join(problems)))
        return 1 if problems else 0
    if cmd == "stop":
        s = SystemServices.load()
        s.stop()
        STATE_FILE.unlink(missing_ok=True)
        print("stopped what start had started")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
