"""The project's SLURM test cluster as the tests see it (scripts/slurm-cluster.sh, docs/test-cluster.md).

- Where it is: ``slurm-cluster.sh env`` names its ``SLURM_CONF``; conftest puts that into
  ``os.environ`` for the whole session, so every SLURM command the tests, rushhpc's launchers and the
  worker jobs run reaches the test cluster and never the machine's own ``/etc/slurm``.
- Whether it answers, and if not why (the skip reason).
- Its lock, ``<cluster folder>/lock`` (flock): a test that uses the cluster holds it shared; a test
  that stops or restarts its daemons holds it exclusive, and so do the script's start, stop,
  node-kill and node-restart.  The script run from an exclusive owner gets the owner's descriptor
  (``RUSHHPC_TEST_CLUSTER_LOCK_FD``) instead of waiting for itself.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import REPO

SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
HOW = ("as root: bash scripts/slurm-cluster.sh install && bash scripts/slurm-cluster.sh start "
       "(see docs/test-cluster.md)")
LOCK_WAIT = float(os.environ.get("RUSHHPC_TEST_CLUSTER_LOCK_WAIT", "240"))
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd-n1", "slurmd-n2", "slurmd-n3")


class ClusterLockTimeout(AssertionError):
    pass


@dataclass
class Status:
    """``slurm-cluster.sh status``: its exit code, and per daemon the pid it reports (None: not running)."""

    returncode: int
    text: str
    pids: dict[str, int | None] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)   # running, but found by port: pid file missing

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def comm(pid: int) -> str | None:
    """The process's name, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else name


class TestCluster:
    __test__ = False  # not a test class

    def __init__(self):
        out = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, timeout=30)
        env = dict(re.findall(r"^export (\w+)=(\S+)$", out.stdout, flags=re.M))
        if out.returncode != 0 or "SLURM_CONF" not in env:
            raise RuntimeError(f"{SCRIPT} env failed: {out.stderr.strip()}")
        self.conf = Path(env["SLURM_CONF"])
        self.dir = Path(env["RUSHHPC_TEST_CLUSTER_DIR"])
        self.lockfile = self.dir / "lock"
        self._fd: int | None = None
        self.mode: str | None = None  # None, "shared" or "exclusive"

    # ------------------------------------------------------------ availability
    def client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env.pop("RUSHHPC_TEST_CLUSTER_LOCK_FD", None)
        return env

    def unavailable_reason(self) -> str | None:
        """None when the test cluster answers with usable nodes; else what is missing and how to get it."""
        if not shutil.which("sinfo"):
            return f"the SLURM client commands (sinfo, sbatch: package slurm-wlm) are not installed; {HOW}"
        if not self.conf.exists():
            return f"the SLURM test cluster is not set up ({self.conf} does not exist); {HOW}"
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60,
                             env=self.client_env())
        if out.returncode != 0:
            err = out.stderr.strip().splitlines()
            return (f"the SLURM test cluster does not answer (SLURM_CONF={self.conf}; sinfo: "
                    f"{err[-1] if err else 'exit ' + str(out.returncode)}); {HOW}")
        if not any(s in out.stdout for s in ("idle", "mix", "alloc")):
            return f"the SLURM test cluster has no usable node (sinfo: {' '.join(out.stdout.split())}); {HOW}"
        return None

    # ------------------------------------------------------------ the lock
    def holders(self) -> str:
        """The processes holding a flock on the lock file, as the script names them."""
        try:
            ino = os.stat(self.lockfile).st_ino
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            return "?"
        out = []
        for line in lines:
            f = line.split()
            if len(f) >= 6 and f[1] == "FLOCK" and f[5].split(":")[-1] == str(ino):
                out.append(f"{f[4]} ({comm(int(f[4])) or '?'}, {f[3]})")
        return ", ".join(out) or "nobody"

    def _acquire(self, op: int, what: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.lockfile, os.O_RDONLY)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._fd, op | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterLockTimeout(f"the SLURM test cluster's lock {self.lockfile} ({what}) was not "
                                             f"free within {LOCK_WAIT:.0f} s; held by: {self.holders()}") from None
                time.sleep(0.2)

    def share(self) -> None:
        """Use the cluster: no one may restart it meanwhile (released after each test)."""
        if self.mode is None:
            self._acquire(fcntl.LOCK_SH, "shared")
            self.mode = "shared"

    def own(self) -> None:
        """Own the cluster: no other test or script uses it meanwhile."""
        if self.mode != "exclusive":
            self._acquire(fcntl.LOCK_EX, "exclusive")
            self.mode = "exclusive"

    def release(self) -> None:
        if self._fd is not None and self.mode is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.mode = None

    # ------------------------------------------------------------ the script
    def script(self, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run slurm-cluster.sh; an exclusive owner hands its lock down."""
        env = dict(env if env is not None else self.client_env())
        env.pop("RUSHHPC_TEST_CLUSTER_LOCK_FD", None)
        pass_fds: tuple[int, ...] = ()
        if self.mode == "exclusive":
            env["RUSHHPC_TEST_CLUSTER_LOCK_FD"] = str(self._fd)
            pass_fds = (self._fd,)
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                              env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL)

    def status(self) -> Status:
        out = self.script("status", timeout=120)
        st = Status(out.returncode, out.stdout + out.stderr)
        for line in out.stdout.splitlines():
            m = re.match(r"^(\S+)\s+running \(pid (\d+), pid file ", line)
            if m:
                st.pids[m[1]] = int(m[2])
                continue
            m = re.match(r"^(\S+)\s+running \(pid (\d+), found by its port", line)
            if m:
                st.pids[m[1]] = int(m[2])
                st.orphans[m[1]] = int(m[2])
                continue
            m = re.match(r"^(\S+)\s+not running", line)
            if m:
                st.pids[m[1]] = None
        return st

    # ------------------------------------------------------------ what is really running
    def accounting(self) -> bool:
        return self.conf.exists() and "AccountingStorageType=accounting_storage/slurmdbd" in self.conf.read_text()

    def pidfile(self, daemon: str) -> Path:
        return {"munged": self.dir / "munge-run" / "munged.pid",
                "mariadbd": self.dir / "mysql-run" / "mysqld.pid"}.get(daemon, self.dir / "run" / f"{daemon}.pid")

    def ports(self) -> dict[str, int]:
        """The TCP port of each daemon, read from the configuration files."""
        conf = self.conf.read_text()
        ports = {"slurmctld": int(re.search(r"^SlurmctldPort=(\d+)", conf, re.M)[1])}
        first = int(re.search(r"^NodeName=n\[1-3\].* Port=(\d+)-\d+", conf, re.M)[1])
        ports.update({f"slurmd-n{i}": first + i - 1 for i in (1, 2, 3)})
        dbd = self.conf.with_name("slurmdbd.conf")
        if dbd.exists():
            text = dbd.read_text()
            ports["slurmdbd"] = int(re.search(r"^DbdPort=(\d+)", text, re.M)[1])
            ports["mariadbd"] = int(re.search(r"^StoragePort=(\d+)", text, re.M)[1])
        return ports

    def munge_socket(self) -> str:
        return re.search(r"^AuthInfo=socket=(\S+)", self.conf.read_text(), re.M)[1]

    def is_ours(self, pid: int, daemon: str) -> bool:
        """pid is this cluster's ``daemon``: the right program, started with this cluster's files."""
        want = "slurmd" if daemon.startswith("slurmd-") else daemon
        if comm(pid) != want:
            return False
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        if daemon == "slurmdbd":
            return f"SLURM_CONF={self.conf}".encode() in environ
        if daemon.startswith("slurmd-"):
            return str(self.conf).encode() in args and daemon[len("slurmd-"):].encode() in args
        return any(str(self.dir).encode() in a for a in args)

    def our_processes(self) -> dict[int, str]:
        """Every live process that is one of this cluster's daemons, found by scanning /proc."""
        found = {}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            pid = int(p.name)
            name = comm(pid)
            if name not in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"):
                continue
            for daemon in DAEMONS:
                if daemon.split("-")[0] == name and self.is_ours(pid, daemon):
                    found[pid] = daemon
        return found

    def listening_pids(self, port: int) -> set[int]:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=30)
        return {int(p) for p in re.findall(r"pid=(\d+)", out.stdout)}

    def truth_problems(self, st: Status) -> list[str]:
        """Where ``status`` and reality disagree (empty when they agree)."""
        problems = []
        ports = self.ports() if self.conf.exists() else {}
        ours = self.our_processes()
        for daemon in DAEMONS:
            if daemon not in st.pids:
                problems.append(f"status does not mention {daemon}")
                continue
            pid = st.pids[daemon]
            running_as = [p for p, d in ours.items() if d == daemon]
            if pid is None:
                if running_as:
                    problems.append(f"status says {daemon} is not running, but pid {running_as} is")
                continue
            if not self.is_ours(pid, daemon):
                problems.append(f"status says {daemon} runs as pid {pid}, which is not this cluster's {daemon}")
                continue
            if daemon not in st.orphans:
                try:
                    in_file = int(self.pidfile(daemon).read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    in_file = None
                if in_file != pid:
                    problems.append(f"status says {daemon} pid {pid} from {self.pidfile(daemon)}, file has {in_file}")
            if daemon in ports and pid not in self.listening_pids(ports[daemon]):
                problems.append(f"{daemon} pid {pid} does not listen on its port {ports[daemon]}")
        return problems


_instance: TestCluster | None = None


def cluster() -> TestCluster:
    """The session's one TestCluster (one lock descriptor per test process)."""
    global _instance
    if _instance is None:
        _instance = TestCluster()
    return _instance
