"""tests/unit: what runs with no service at all (no Redis, no SLURM, no sshd, no browser), in seconds.

Every test here runs with TCP connections and the services' binaries refused, so a test that needs
one fails here instead of passing on a machine that happens to have it: move it to tests/integration
(or tests/backends). Programs a test brings itself (a shell script, a stand-in `scontrol` in a
temporary folder) may run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

SERVICES = {"redis-server", "redis-cli", "sbatch", "squeue", "sacct", "scontrol", "srun", "scancel", "sinfo", "sshd",
            "ssh", "chromium", "qsub", "qstat", "qdel", "slurmctld", "slurmd", "slurmdbd", "tmux"}
_connect, _connect_ex, _popen_init = socket.socket.connect, socket.socket.connect_ex, subprocess.Popen.__init__


def _refuse_tcp(method):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a unit test connected to {address}: it belongs in tests/integration")
        return method(self, address)
    return guarded


def _refuse_services(self, args, *rest, **kwargs):
    argv = [args] if isinstance(args, (str, bytes)) else [str(a) for a in args]
    program = shutil.which(str(argv[0]).split()[0]) or str(argv[0]) if argv else ""
    name = program.rsplit("/", 1)[-1]
    if name in SERVICES and program.startswith(("/usr/", "/bin/", "/sbin/")):
        raise AssertionError(f"a unit test started {program}: it belongs in tests/integration or tests/backends")
    if " ".join(argv[:4]).count("-m rushhpc") or "rushhpc.worker" in " ".join(argv):
        raise AssertionError("a unit test started a rushhpc process: it belongs in tests/integration")
    return _popen_init(self, args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def _no_services(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse_tcp(_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse_tcp(_connect_ex))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse_services)
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
