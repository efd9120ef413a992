"""A real Redis Cluster for the tests: 3 primaries (and optionally replicas) on free loopback ports.

Each node is a ``redis-server --cluster-enabled yes`` process with its own temporary folder (its
``nodes.conf``, its log); ``redis-cli --cluster create`` assigns the 16384 slots; the cluster is
ready when every node's ``CLUSTER INFO`` says ``cluster_state:ok``. `stop` ends the processes it
started, by pid, and removes their folders. With a password, every node has ``requirepass`` and
``masterauth`` (the same password, as a real cluster would).

The binaries: ``$RUSHHPC_REDIS_SERVER`` or Debian's ``/usr/bin/redis-server`` (7.0 in Debian 12),
else the first on PATH, and the ``redis-cli`` beside it. Without them the tests skip, unless
``RUSHHPC_REQUIRE_CLUSTER=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

N_PRIMARIES = 3
START_TIMEOUT = 30.0


class ClusterUnavailable(Exception):
    """No redis-server/redis-cli able to run a cluster here."""


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports whose cluster bus ports (port + 10000) are free too, outside
    6379 and 17000-17999 (the SLURM test cluster's)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in ports or port == 6379 or port + 10000 > 65535:
            continue
        if any(17000 <= p <= 17999 for p in (port, port + 10000)):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def binaries() -> tuple[str, str]:
    """(redis-server, redis-cli) that can run a cluster, or `ClusterUnavailable`."""
    server = os.environ.get("RUSHHPC_REDIS_SERVER")
    if not server:
        server = "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else shutil.which("redis-server")
    if not server:
        raise ClusterUnavailable("redis-server is not installed (apt-get install redis-server)")
    cli = Path(server).with_name("redis-cli")
    cli_path = str(cli) if os.access(cli, os.X_OK) else shutil.which("redis-cli")
    if not cli_path:
        raise ClusterUnavailable(f"no redis-cli beside {server} or on PATH")
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise ClusterUnavailable(f"{server} --version failed: {out.stderr.strip()}")
    return server, cli_path


def version(server: str) -> str:
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else "?"


class RedisClusterProcesses:
    """3 primaries on loopback, created and checked; `stop` ends them (by pid) and cleans up."""

    def __init__(self, password: str | None = None, n: int = N_PRIMARIES, replicas: int = 0,
                 node_timeout_ms: int = 5000):
        self.server, self.cli = binaries()
        self.version = version(self.server)
        self.password = password
        self.n_primaries = n
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="rushhpc-cluster-"))
        self.all_ports = _free_ports(n * (1 + replicas))
        self.procs: dict[int, subprocess.Popen] = {}
        self.killed: set[int] = set()
        try:
            for port in self.all_ports:
                self._start_node(port)
            self._wait(lambda: all(self._ping(p) for p in self.all_ports), "every node to answer PING")
            self._create()
            self._wait(self._ok, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise

    @property
    def ports(self) -> list[int]:
        """The ports of the live primaries (a replica promoted by a failover becomes one)."""
        out = []
        for port in self.all_ports:
            if self.procs[port].poll() is not None:
                continue
            with self.node_client(port) as c:
                me = next(n for n in c.execute_command("CLUSTER NODES").values() if "myself" in n["flags"])
                if "master" in me["flags"]:
                    out.append(port)
        return out

    # ------------------------------------------------------------------ start
    def _start_node(self, port: int) -> None:
        d = self.dir / str(port)
        d.mkdir()
        conf = [f"port {port}", "bind 127.0.0.1", f'dir "{d}"', "cluster-enabled yes",
                'cluster-config-file "nodes.conf"', f"cluster-node-timeout {self.node_timeout_ms}", 'save ""', "appendonly no",
                f'logfile "{d / "redis.log"}"', "protected-mode yes", "repl-diskless-sync-delay 0"]
        if self.password:
            conf += [f'requirepass "{self.password}"', f'masterauth "{self.password}"']
        (d / "redis.conf").write_text("\n".join(conf) + "\n")
        os.chmod(d / "redis.conf", 0o600)
        self.procs[port] = subprocess.Popen([self.server, str(d / "redis.conf")], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)

    def node_client(self, port: int, **kw) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, decode_responses=True,
                           socket_connect_timeout=2, socket_timeout=5, **kw)

    def _ping(self, port: int) -> bool:
        try:
            with self.node_client(port) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def _create(self) -> None:
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password  # never an argument
        cmd = [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.all_ports),
               "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
                               + self.logs())

    def _ok(self) -> bool:
        try:
            for p in self.all_ports:
                with self.node_client(p) as c:
                    info = c.execute_command("CLUSTER INFO")  # parsed: {'cluster_state': 'ok', ...}
                    if info.get("cluster_state") != "ok":
                        return False
                    # every node must know every other one (gossip done), or a client may be sent astray
                    nodes = c.execute_command("CLUSTER NODES")  # {address: {'flags': ..., 'connected': ...}}
                    primaries = [n for n in nodes.values() if "master" in n["flags"] and n["connected"]]
                    if len(primaries) != self.n_primaries or len(nodes) != len(self.all_ports):
                        return False
                    repl = c.info("replication")
                    if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        return False  # a replica not in sync could not take over
            return True
        except redis.RedisError:
            return False

    def _wait(self, predicate, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [p.pid for port, p in self.procs.items() if p.poll() is not None and port not in self.killed]
            if dead:
                raise RuntimeError(f"redis-server pid(s) {dead} exited while waiting for {what}" + self.logs())
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}" + self.logs())
            time.sleep(0.1)

    def logs(self) -> str:
        parts = []
        for port in self.all_ports:
            log = self.dir / str(port) / "redis.log"
            if log.exists():
                parts.append(f"\n--- node {port} ---\n" + "\n".join(log.read_text().splitlines()[-15:]))
        return "".join(parts)

    # ------------------------------------------------------------------ facts

    def slot_owner(self, slot: int) -> int:
        """The port of the primary that serves ``slot`` (from CLUSTER SLOTS of the first live node)."""
        with self.node_client(self._live()[0]) as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise AssertionError(f"slot {slot} is not served")

    def _live(self) -> list[int]:
        return [p for p in self.all_ports if self.procs[p].poll() is None]

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crashed primary); `stop` still reaps it."""
        self.killed.add(port)
        self.procs[port].kill()
        self.procs[port].wait(10)

    def keyslot(self, key: str) -> int:
        with self.node_client(self._live()[0]) as c:
            return int(c.execute_command("CLUSTER KEYSLOT", key))

    def keys_of_node(self, port: int, pattern: str = "*") -> list[str]:
        with self.node_client(port) as c:
            return sorted(c.scan_iter(match=pattern, count=1000))

    def node_id(self, port: int) -> str:
        with self.node_client(port) as c:
            return str(c.execute_command("CLUSTER MYID"))

    def move_slot(self, slot: int, to_port: int, timeout: float = 20.0) -> None:
        """Migrate ``slot`` with its keys to the primary on ``to_port`` (IMPORTING/MIGRATING, MIGRATE,
        SETSLOT NODE on every node, as redis-cli's reshard does) and wait until every node agrees."""
        src_port = self.slot_owner(slot)
        if src_port == to_port:
            return
        src_id, dst_id = self.node_id(src_port), self.node_id(to_port)
        with self.node_client(src_port) as src, self.node_client(to_port) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
                if not keys:
                    break
                auth = ["AUTH", self.password] if self.password else []
                src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 10000, *auth, "KEYS", *keys)
            dst.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            src.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        for port in self.ports:
            if port not in (src_port, to_port):
                with self.node_client(port) as c:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)

        def agreed() -> bool:
            for port in self._live():
                with self.node_client(port) as c:
                    for start, end, primary, *_ in c.execute_command("CLUSTER SLOTS"):
                        if int(start) <= slot <= int(end) and int(primary[1]) != to_port:
                            return False
            return True

        self._wait(agreed, f"every node to see slot {slot} on port {to_port}", timeout)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs = {}
        shutil.rmtree(self.dir, ignore_errors=True)
