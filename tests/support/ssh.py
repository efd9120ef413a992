"""A real sshd on a free port from a private config, for the SSH launcher's tests."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import free_port, wait_until

SSHD = "/usr/sbin/sshd"


class Sshd:
    def __init__(self, tmp: Path):
        self.dir = tmp
        self.port = free_port()
        self.user = getpass.getuser()
        for name in ("host_key", "client_key", "stranger_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp / name)],
                           check=True, capture_output=True)
        (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
        os.chmod(tmp / "authorized_keys", 0o600)
        self.pidfile = tmp / "sshd.pid"
        config = tmp / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f'HostKey "{tmp / "host_key"}"',
            f'AuthorizedKeysFile "{tmp / "authorized_keys"}"',
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            f'PidFile "{self.pidfile}"',
            "MaxStartups 100",
            "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.log = tmp / "sshd.log"
        # -D: stay in the foreground, so the pid we hold is the sshd's own
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._ready, 15, interval=0.1, what=f"sshd on port {self.port} (log: {self.log})")

    def ssh_options(self, key: str = "client_key", port: bool = True) -> list[str]:
        opts = ["-F", "/dev/null", "-i", str(self.dir / key), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        return opts + (["-p", str(self.port)] if port else [])

    def options(self, **kw) -> dict:
        """launcher_options reaching this sshd; the remote python is the tests' interpreter."""
        opts = {"hosts": [f"{self.user}@127.0.0.1"], "python": sys.executable, "ssh_options": self.ssh_options()}
        opts.update(kw)
        return opts

    def run(self, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.ssh_options(), "-o", "BatchMode=yes", f"{self.user}@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited with code {self.proc.returncode}: {self.log.read_text(errors='replace')}")
        try:
            return self.run("true", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by its pid, never by name
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD):
        reason = f"{SSHD} is not installed (apt-get install openssh-server) - the SSH launcher tests need a real sshd"
        if os.environ.get("RUSHHPC_REQUIRE_SSH") == "1":
            pytest.fail(reason + " and RUSHHPC_REQUIRE_SSH=1")
        pytest.skip(reason)
    if not os.path.isdir("/run/sshd") and os.geteuid() != 0:
        pytest.skip("sshd needs /run/sshd, which only root can create here")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # an unreaped zombie is gone too
    except (FileNotFoundError, ProcessLookupError):
        return False
