"""A heartbeat process without a worker: a stand-in process (registered as a running worker by
hand) calls `rushhpc.worker.heartbeat.start_heartbeat` and sleeps, so the heartbeat is its child and
beats for it, and a kill request SIGKILLs the stand-in. The heartbeat's stderr goes to a file
the test reads; the configuration (password included) reaches the stand-in on its stdin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from rushhpc.store.connection import RedisConfig, credentials
from rushhpc.store.keys import Keys

_STAND_IN = r"""
import json, sys, time
from rushhpc.store.connection import from_credentials
from rushhpc.worker.heartbeat import start_heartbeat
doc = json.loads(sys.stdin.read())
hb = start_heartbeat(from_credentials(doc["credentials"]), doc["network"], doc["worker"], doc["period"], doc["expire"])
print(hb.pid, flush=True)
time.sleep(600)
"""


def vm_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class StandIn:
    """A stand-in worker ``worker_id`` of ``network_id`` with its heartbeat process (``hb_pid``)."""

    def __init__(self, cfg: RedisConfig, network_id: str, worker_id: str, folder: Path,
                 period: float = 0.3, expire: float = 10, register: RedisConfig | None = None):
        self.keys = Keys(network_id)
        self.worker_id = worker_id
        self.heartbeat_key = self.keys.heartbeat(worker_id)
        self.kill_key = self.keys.kill(worker_id)
        client = (register or cfg).client()  # ``register``: another configuration, for the registration only
        try:
            client.hset(self.keys.worker(worker_id), "state", "running")
        finally:
            client.close()
        self.stderr = folder / f"stand-in-{worker_id}.err"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", _STAND_IN], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, env=dict(os.environ))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"credentials": credentials(cfg), "network": network_id, "worker": worker_id,
                                          "period": period, "expire": expire}).encode())
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        assert line, f"the stand-in did not start its heartbeat: {self.stderr.read_text()}"
        self.hb_pid = int(line)

    def log(self) -> str:
        return self.stderr.read_text()

    def hb_alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.hb_pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def stop(self) -> None:
        """End the stand-in (its heartbeat follows by PDEATHSIG); both by pid."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.hb_alive():
            try:
                os.kill(self.hb_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
