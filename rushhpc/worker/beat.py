"""The heartbeat process's body: the beat loop over a minimal Redis client, standard library only.

A worker node runs one heartbeat process per worker, so its memory counts: with redis-py (and
asyncio through it) and psutil it held ~34 MiB RSS; this module imports neither, nor any other
rushhpc module than `rushhpc.processes` (standard library only too: liveness, process trees, the
processes a worker marked), `rushhpc.defaults` (constants) and `rushhpc.core.states` (the worker
states; it imports only enum, which signal loads anyway) (~11 MiB; the last two add ~84 KiB and
~2 ms at start; with TLS the ssl module and OpenSSL add ~5 MiB). The parent
(`rushhpc.worker.heartbeat.start_heartbeat`) resolves everything beforehand (host, port, credentials,
TLS files, key names, the Lua source and its SHA1, the network's cluster slot) and sends it on
stdin as JSON. It imports this file, processes.py and defaults.py from their folders and
core/states.py from its folder beside this one
(`rushhpc.worker.heartbeat.beat_command`: ``python -I -S``, no site packages, no rushhpc package
import); ``python -m rushhpc.worker.beat`` works too.

The client speaks RESP2 over one socket: TLS with the server's certificate and host name
verified (the CA, certificate and key files of the worker's configuration), AUTH with the user
name and password, SELECT of a database other than 0; EVALSHA of the heartbeat script, loading
it again after NOSCRIPT (a Redis restart, another node). On a Redis Cluster it asks a node for
CLUSTER SLOTS and talks to the primary that owns the network's slot (every key of a network is
there), follows a MOVED reply to the node it names and an ASK reply (ASKING, for that one
command), and when the node stops answering asks the cluster again: the configured node first,
then every node the last CLUSTER SLOTS reply named (the configured one may be the primary that
died). Every other error drops the connection; the loop reconnects with backoff (see `run`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

TYPE_CHECKING = False  # no typing import at run time: this process's memory counts
if TYPE_CHECKING:
    from typing import Any

if __package__:  # rushhpc.worker.beat: imported, or run with -m
    from rushhpc import defaults
    from rushhpc.core.states import WorkerState
    from rushhpc.processes import alive, kill_tree, marked
else:  # run alone by the heartbeat command (python -I -S): the package's folder is on sys.path, not the package
    import defaults  # type: ignore[import-not-found,no-redef]  # constants only, standard library only
    from processes import alive, kill_tree, marked  # type: ignore[import-not-found,no-redef]

    # The worker states, from core/states.py beside this folder (as a top-level `states`: the package is
    # not imported). It imports only enum, which signal has loaded already: about 1.7 ms once and 64 KiB.
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "core"))
    from states import WorkerState  # type: ignore[import-not-found,no-redef]

REGISTER_WAIT = defaults.HEARTBEAT_REGISTER_WAIT  # seconds to wait for the worker to register (the parent sends it too)
MAX_REDIRECTS = defaults.HEARTBEAT_MAX_REDIRECTS  # MOVED/ASK replies followed for one command before it counts as an error
_NO_WORKER = ""  # heartbeat.lua's reply when the worker has no hash (not registered yet, or the network reset)


class RedisError(Exception):
    """An error reply (``-ERR ...``, ``-MOVED ...``); the connection is still in step."""


class Conn:
    """One connection to one Redis node (TLS, AUTH and SELECT done on connect)."""

    def __init__(self, host: str, port: int, s: dict, timeout: float, tls: Any = None):
        self.host, self.port = host, port
        self.s = s
        self.timeout = timeout
        self.tls = tls  # an ssl.SSLContext, or None for plain TCP
        self.sock: Any = None
        self.buf = b""
        self.used = False  # a command was answered on this connection

    def connect(self) -> Conn:
        s = self.s
        sock = socket.create_connection((self.host, self.port), timeout=float(s.get("connect_timeout") or 5))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock, self.buf = sock, b""
        try:
            if s.get("username") or s.get("password") is not None:
                self.call("AUTH", *([s["username"]] if s.get("username") else []), s.get("password") or "")
            if int(s.get("db") or 0):
                self.call("SELECT", str(int(s["db"])))
        except BaseException:
            self.close()
            raise
        self.used = False  # the handshake does not count
        return self

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf = None, b""

    def call(self, *args: str | int) -> Any:
        """Send one command, return its reply; an error reply raises `RedisError`, a broken
        connection (or a garbled reply) closes it and raises `OSError`."""
        if self.sock is None:
            raise OSError(f"connection to {self.host}:{self.port}: not connected")
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        try:
            self.sock.sendall(b"".join(parts))
            reply = self._read()
        except RedisError:
            self.used = True
            raise
        except (OSError, ValueError) as e:  # socket.timeout and ssl.SSLError are OSErrors
            self.close()
            raise OSError(f"connection to {self.host}:{self.port}: {e or type(e).__name__}") from None
        self.used = True
        return reply

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def _read(self) -> Any:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            # every element is read even after an error reply inside, so the connection stays in step
            items, error = [], None
            for _ in range(n):
                try:
                    items.append(self._read())
                except RedisError as e:
                    error = error or e
            if error is not None:
                raise error
            return items
        raise ValueError(f"not a RESP2 reply: {line[:40]!r}")


def _address(text: str, default_host: str) -> tuple[str, int]:
    """``host:port`` of a MOVED/ASK reply (an IPv6 host has colons; an empty one is the node's own)."""
    host, _, port = text.rpartition(":")
    return host or default_host, int(port)


class Client:
    """The heartbeat's connection to the node that serves its network: one server, or on a
    Redis Cluster the primary owning the network's slot (found and followed, see the module)."""

    def __init__(self, s: dict, timeout: float):
        self.s = s
        self.timeout = timeout
        self.seed = (str(s["host"]), int(s["port"]))
        self.cluster = bool(s.get("cluster"))
        self.slot = int(s.get("slot") or 0)
        self.known: list[tuple[str, int]] = []  # the cluster's nodes from the last CLUSTER SLOTS
        self.node: tuple[str, int] | None = None if self.cluster else self.seed
        self.conn: Conn | None = None
        self.source, self.sha = s["script"], s["sha"]
        self._tls: Any = None

    def _context(self) -> Any:
        if not self.s.get("tls"):
            return None
        if self._tls is None:
            import ssl  # only for TLS: ~5 MiB with OpenSSL

            # the server's certificate is verified, host name included (redis-py's ssl_cert_reqs="required")
            ctx = ssl.create_default_context(cafile=self.s.get("tls_ca") or None)
            if self.s.get("tls_cert"):
                ctx.load_cert_chain(self.s["tls_cert"], self.s.get("tls_key") or None)
            self._tls = ctx
        return self._tls

    def _open(self, node: tuple[str, int]) -> Conn:
        return Conn(node[0], node[1], self.s, self.timeout, self._context()).connect()

    def reset(self) -> None:
        """After an error: drop the connection; on a cluster, ask it again where the slot is."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        if self.cluster:
            self.node = None

    def _connection(self) -> Conn:
        if self.conn is None:
            if self.node is None:
                self.conn = self._locate()
            else:
                self.conn = self._open(self.node)
        return self.conn

    def _locate(self) -> Conn:
        """Connect to the primary that owns the slot, as the cluster reports it."""
        error: Exception = OSError("no cluster node to ask")
        for node in [self.seed, *(a for a in self.known if a != self.seed)]:
            try:
                conn = self._open(node)
            except (OSError, RedisError) as e:
                error = e
                continue
            try:
                ranges = conn.call("CLUSTER", "SLOTS")
            except (OSError, RedisError) as e:
                conn.close()
                error = e
                continue
            nodes: set[tuple[str, int]] = set()
            owner = None
            try:
                for start, end, *served in ranges:
                    # each node: [host, port, id, ...]; an empty host is the node asked, '?' unknown
                    addrs = [(n[0] or node[0], int(n[1])) for n in served if n[0] != "?"]
                    nodes.update(addrs)
                    if int(start) <= self.slot <= int(end) and served and served[0][0] != "?":
                        owner = addrs[0]
            except (TypeError, ValueError, IndexError):
                conn.close()
                error = RedisError(f"cannot read the CLUSTER SLOTS reply of {node[0]}:{node[1]}")
                continue
            if nodes:
                self.known = sorted(nodes)
            if owner is None:
                conn.close()
                error = RedisError(f"CLUSTERDOWN slot {self.slot} is not served (as {node[0]}:{node[1]} sees it)")
                continue
            self.node = owner
            if owner == node:
                return conn
            conn.close()
            return self._open(owner)
        raise error

    def _run(self, conn: Conn, args: tuple, asking: bool = False) -> Any:
        if asking:
            conn.call("ASKING")
        try:
            return conn.call(*args)
        except RedisError as e:
            if args[0] != "EVALSHA" or not str(e).startswith("NOSCRIPT"):
                raise
        conn.call("SCRIPT", "LOAD", self.source)  # Redis restarted, or another node: load it again
        if asking:
            conn.call("ASKING")
        return conn.call(*args)

    def call(self, *args: str | int) -> Any:
        """One command on the network's node, following MOVED and ASK replies. A connection
        that worked before and breaks now (a killed client, an idle connection dropped on the
        way) is opened again once at once, as redis-py's retry would; a second failure raises."""
        reopened = False
        for _ in range(MAX_REDIRECTS + 1):
            conn = self._connection()
            try:
                return self._run(conn, args)
            except OSError:
                self.conn = None
                if reopened or not conn.used:
                    raise
                reopened = True
                continue
            except RedisError as e:
                kind, _, rest = str(e).partition(" ")
                if not self.cluster or kind not in ("MOVED", "ASK"):
                    raise
                try:
                    target = _address(rest.split(" ")[-1], conn.host)
                except ValueError:
                    raise RedisError(f"cannot follow {e}") from None
            if kind == "MOVED":  # the slot has a new owner: go there for good
                conn.close()
                self.conn, self.node = None, target
                if target not in self.known:
                    self.known.append(target)
                continue
            # ASK: the slot is migrating and this key is on the target already, for this command only
            other = self._open(target)
            try:
                return self._run(other, args, asking=True)
            finally:
                other.close()
        raise RedisError(f"more than {MAX_REDIRECTS} MOVED/ASK redirections for {args[0]}")

    def script(self, keys: list[str], args: list[str]) -> Any:
        return self.call("EVALSHA", self.sha, len(keys), *keys, *args)


# ------------------------------------------------------------------ the loop

def _seconds(x: float) -> str:
    """A BLPOP timeout: decimal, never in exponent notation."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def run(s: dict) -> int:
    """The heartbeat loop (what `rushhpc.worker.heartbeat` documents). Returns the exit code.

    Each round: stop when the worker is gone (its parent, now); stop the worker when the manager
    process it watches is gone; run the heartbeat script (it refreshes the heartbeat key while the
    worker is registered as running, and returns the worker's state); then BLPOP the kill list for
    one period, so one command both sleeps and listens. Redis errors are retried with backoff.
    """
    wid = s["worker_id"]
    worker_pid = int(s["worker_pid"])
    watch_pid = int(s["watch_pid"]) if s.get("watch_pid") else None
    period = float(s["period"])
    expire = str(max(1, round(float(s["expire"]))))
    keys = s["keys"]
    beat_keys, beat_args = [keys["worker"], keys["heartbeat"]], [s["prefix"], expire]
    # socket timeout above the blocking timeout, so BLPOP is never cut short
    client = Client(s, timeout=period + 10)
    failures = 0
    me = os.getpid()
    seen_running = False
    started = time.monotonic()
    register_wait = float(s.get("register_wait", REGISTER_WAIT))

    while True:
        if os.getppid() != worker_pid or not alive(worker_pid):
            worker_gone(s)  # the worker is gone: nothing left to beat for, nor of it to leave running
            return 0
        if watch_pid and not alive(watch_pid):
            print(f"rushhpc heartbeat: manager process {watch_pid} exited; stopping worker {wid}", file=sys.stderr)
            kill_tree(worker_pid, skip=me)
            return 0
        try:
            state = client.script(beat_keys, beat_args) or ""
            if state in (_NO_WORKER, WorkerState.PENDING) and not seen_running:
                # started just before the worker registers (so its pid is in the registration)
                if time.monotonic() - started > register_wait:
                    return 0
                time.sleep(min(0.05, period))
                continue
            seen_running = True
            if state in (_NO_WORKER, WorkerState.KILLED):
                # killed by the manager, or the network was reset: stop the worker now
                kill_tree(worker_pid, skip=me)
                return 0
            if state in (WorkerState.TERMINATED, WorkerState.FAILED):
                return 0  # the worker is ending by itself
            request = client.call("BLPOP", keys["kill"], _seconds(period))
            failures = 0
            if request is not None:
                print(f"rushhpc heartbeat: kill request for worker {wid}", file=sys.stderr)
                kill_tree(worker_pid, skip=me)
                return 0
        except (RedisError, OSError) as e:
            # A Redis hiccup must not cost a live worker its tasks: keep trying,
            # backing off up to one period; the expiry decides, not one error.
            client.reset()
            failures += 1
            delay = min(period, 0.2 * 2 ** min(failures, 10))
            print(f"rushhpc heartbeat: Redis error ({e}); retry {failures} in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)


GROUP_GRACE = defaults.HEARTBEAT_GROUP_GRACE  # seconds a dead worker's processes get between SIGTERM and SIGKILL


def worker_gone(s: dict) -> None:
    """The worker died under this process (SIGKILL, the OOM killer): leave nothing of it running or beating.

    Every process the worker started (a command objective's program and what it forked, whatever a
    function objective started: they inherit the worker's token in their environment) gets SIGTERM,
    then SIGKILL after `GROUP_GRACE`. The heartbeat key is deleted, so the next lost-worker check
    finds the worker at once instead of after the key's expiry.
    """
    token = s.get("worker_token")
    pids = marked(token) if token else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (GROUP_GRACE if sig == signal.SIGTERM else 0)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.02)
    try:  # a fresh connection: the loop's may be inside a BLPOP
        Client(s, timeout=5).call("DEL", s["keys"]["heartbeat"])
    except (RedisError, OSError):
        pass  # then the key's expiry decides, as before


def _on_sigterm(s: dict) -> None:
    # SIGTERM comes from the worker's stop_heartbeat (it lives: just end), or as the parent-death
    # signal when the worker died (clean up after it first)
    if os.getppid() != int(s["worker_pid"]) or not alive(int(s["worker_pid"])):
        worker_gone(s)
    raise SystemExit(0)


def main() -> int:
    settings = json.loads(sys.stdin.read())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's business
    signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(settings))
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
