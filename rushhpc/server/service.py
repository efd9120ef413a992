"""A Redis for a cluster: what ``rushhpc redis start|stop|status|user`` runs.

A server lives in a *state folder* (``~/.rushhpc/redis/<name>/``, or
``$RUSHHPC_REDIS_HOME/<name>/``, 0700)::

    redis.conf          0600  the server's configuration (no password in it)
    users.acl           0600  ACL users: ``default`` (the admin) and one per network,
                              passwords stored as SHA-256 hashes
    password            0600  the admin (``default`` user) password
    users/NET.password  0600  the password of the network user ``rushhpc-NET``
    server.json               what `start` recorded: pid, process start time, bind, port, URL
    redis.pid, redis.log      written by redis-server
    data/                     the append-only file / snapshots (``--appendonly``)
    tls/                      ca.crt, ca.key, server.crt, server.key (generated with ``--tls``),
                              client.crt, client.key (with ``--tls-auth-clients``)

redis-server is started with ``redis-server <state>/redis.conf`` and daemonizes: the
password is never in its argv, and it outlives the command that started it. A password is
always set, so binding beyond loopback is safe from anonymous use (not from sniffing:
use ``--tls`` on a network others can read). ``maxmemory-policy noeviction`` always: an
evicted task key would be a silently lost task. `stop` stops only the process `start`
recorded (same pid and process start time, a redis-server), by pid.

The other concerns live beside this module: the state folder's files (`rushhpc.server.folder`),
finding the binary (`rushhpc.server.binary`), addresses and ports (`rushhpc.server.ports`), TLS
certificates (`rushhpc.server.tls`), the redis.conf and ACL text (`rushhpc.server.conf`) and the
network users (`rushhpc.server.users`).

Example:
    >>> info = start(state_dir("sweep"), StartOptions(bind=["0.0.0.0"], appendonly=True, tls=True))
    >>> info["url"], info["password_file"]
    ('rediss://login1.cluster:40123/0', '/home/me/.rushhpc/redis/sweep/password')
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import psutil
import redis

from rushhpc import defaults
from rushhpc.core.states import ServerState
from rushhpc.errors import RushConfigError
from rushhpc.server.binary import find_redis_server
from rushhpc.server.conf import check_maxmemory, conf_text, new_password, write_acl
from rushhpc.server.folder import Paths, locked, mkdir_private, read_json, write_json, write_private
from rushhpc.server.ports import free_port, port_free, port_holder, url_host
from rushhpc.server.tls import cert_expiry, server_tls
from rushhpc.store.connection import RedisConfig
from rushhpc.store.diagnostics import check_connection
from rushhpc.store.secrets import check_private_file, read_secret_file


@dataclasses.dataclass
class StartOptions:
    """What `start` is asked for (the ``rushhpc redis start`` options).

    Example:
        >>> StartOptions(bind=["0.0.0.0"], appendonly=True, maxmemory="8gb")
    """

    bind: Sequence[str] = ("127.0.0.1",)
    port: int | None = None  # None: the port of the last start if free, else any free port
    host: str | None = None  # the host name clients use (default: from the bind addresses)
    appendonly: bool = False
    # with appendonly: "everysec" (a crash loses up to 1 s of results) or "always" (a result is
    # fsynced before its finish is acknowledged; costs latency, see docs/benchmarks.md)
    fsync: str = "everysec"
    maxmemory: str | None = None
    tls: bool = False
    tls_cert: str | None = None  # the server's certificate, key and CA (default: generated)
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_auth_clients: bool = False  # ask clients for a certificate signed by the CA
    redis_server: str | None = None  # the binary (default: found, TLS-capable when needed)
    timeout: float = defaults.REDIS_START_TIMEOUT


def _our_process(paths: Paths, state: dict[str, Any]) -> psutil.Process | None:
    """The redis-server `start` recorded, if it still runs.

    Its identity is the pid and process start time recorded in ``server.json`` once it
    answered; the pid file is only believed when it names that same process (or, for a
    server recorded without a start time, a redis-server). A reused or rewritten pid
    never makes `stop` signal another process.
    """
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int(paths.pid.read_text().strip()))
    if state.get("pid"):
        pids.append(int(state["pid"]))
    for pid in dict.fromkeys(pids):
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if state.get("create_time") is not None:
                if pid != state.get("pid") or abs(p.create_time() - float(state["create_time"])) > 1.0:
                    continue  # not the process recorded (a reused pid, another process)
            if "redis" not in (p.name() + " " + " ".join(p.cmdline()[:1])).lower():
                continue
            return p
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            continue
    return None


def _describe_pid(paths: Paths) -> str:
    try:
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return ""
    try:
        p = psutil.Process(pid)
        return f"pid {pid} ({p.name()}, {p.status()})"
    except psutil.NoSuchProcess:
        return f"pid {pid} (no such process)"


def admin_config(paths: Paths, state: dict[str, Any] | None = None) -> RedisConfig:
    """The admin connection to the server of this state folder (``default`` user).

    Example:
        >>> admin_config(Paths(state_dir("sweep"))).connect().ping()
        True
    """
    state = state if state is not None else read_json(paths.state)
    if not state.get("port"):
        raise RushConfigError(f"no Redis was started in {paths.dir} (no server.json): rushhpc redis start")
    return RedisConfig(
        host=state["host"], port=int(state["port"]), password=read_secret_file(paths.password),
        tls=bool(state.get("tls")), tls_ca=state.get("tls_ca"),
        tls_cert=state.get("tls_client_cert"), tls_key=state.get("tls_client_key"),
    )


def _checked(opts: StartOptions) -> StartOptions:
    """The options `start` was given, checked and completed (a size in lower case, TLS implied by its files)."""
    if opts.maxmemory:
        opts.maxmemory = check_maxmemory(opts.maxmemory)
    if not opts.bind:
        raise RushConfigError("--bind needs at least one address")
    if opts.tls_auth_clients and not opts.tls:
        raise RushConfigError("--tls-auth-clients needs --tls")
    given_tls = [opts.tls_cert, opts.tls_key, opts.tls_ca]
    if any(given_tls) and not all(given_tls):
        raise RushConfigError("pass all of --tls-cert, --tls-key and --tls-ca, or none (to generate them)")
    if any(given_tls):
        opts.tls = True
    return opts


def _admin_password(paths: Paths) -> str:
    """The admin password: made on the first start, then kept across restarts (clients keep their password file)."""
    if paths.password.exists():
        check_private_file(paths.password)
        return read_secret_file(paths.password)
    password = new_password()
    write_private(paths.password, password + "\n")
    return password


def _first_port(opts: StartOptions, old: dict[str, Any]) -> int:
    """``--port`` (which must be free), else the last start's port when it is free, else a free one."""
    if opts.port is None:
        prev = old.get("port")
        return int(prev) if prev and port_free(int(prev), opts.bind) else free_port(opts.bind)
    if not 0 < opts.port < 65536:
        raise RushConfigError(f"--port must be 1-65535, got {opts.port}")
    if not port_free(opts.port, opts.bind):
        raise RushConfigError(f"port {opts.port} is taken (on {' '.join(opts.bind)}) by "
                              f"{port_holder(opts.port)}: choose another --port, or leave it out for a free one")
    return opts.port


def start(directory: Path, opts: StartOptions) -> dict[str, Any]:
    """Start the Redis of this state folder (or find it running). Returns `status`.

    The admin password is generated on the first start and kept (so are the port when it
    is still free, the ACL users and a generated CA): a restart comes back at the same URL.

    Example:
        >>> start(state_dir("sweep"), StartOptions(bind=["0.0.0.0"], tls=True))["url"]
        'rediss://login1.cluster:40123/0'
    """
    paths = Paths(Path(directory))
    opts = _checked(opts)
    with locked(paths):
        old = read_json(paths.state)
        _check_machine(paths, old, "start")
        if _our_process(paths, old) is not None:
            doc = status(paths.dir)
            doc["already_running"] = True
            return doc
        binary = find_redis_server(tls=opts.tls, binary=opts.redis_server)
        mkdir_private(paths.data)
        write_acl(paths, _admin_password(paths))
        host = url_host(opts.bind, opts.host)
        tls = server_tls(paths.tls, opts.bind, host, opts.tls_auth_clients,
                         (opts.tls_cert, opts.tls_key, opts.tls_ca)) if opts.tls else {}
        explicit = opts.port is not None
        port = _first_port(opts, old)
        last = ""
        for _attempt in range(defaults.REDIS_PORT_ATTEMPTS):
            write_private(paths.conf, conf_text(paths, bind=opts.bind, port=port, appendonly=opts.appendonly, fsync=opts.fsync,
                                                maxmemory=opts.maxmemory, tls=tls, tls_auth_clients=opts.tls_auth_clients))
            state = {
                "name": paths.dir.name, "dir": str(paths.dir), "machine": socket.gethostname(),
                "binary": binary, "bind": list(opts.bind),
                "port": port, "host": host, "tls": opts.tls, "tls_ca": tls.get("ca"), "tls_server_cert": tls.get("cert"),
                "tls_auth_clients": opts.tls_auth_clients,
                "tls_client_cert": tls.get("client_cert"), "tls_client_key": tls.get("client_key"),
                "appendonly": opts.appendonly, "fsync": opts.fsync, "maxmemory": opts.maxmemory,
            }
            ok, last = _launch(paths, binary, state, opts.timeout)
            if ok:
                return status(paths.dir)
            if explicit or "Address already in use" not in last:
                break
            port = free_port(opts.bind)  # taken between the check and redis's bind: another one
        raise RushConfigError(f"redis-server ({binary}) did not start: {last.strip()[-1500:] or 'no output'}; "
                              f"see {paths.log}")


def _launch(paths: Paths, binary: str, state: dict[str, Any], timeout: float) -> tuple[bool, str]:
    """Start redis-server on this conf; True once it answers PING as recorded."""
    with contextlib.suppress(FileNotFoundError):
        paths.pid.unlink()
    log_size = paths.log.stat().st_size if paths.log.exists() else 0
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.run(
            [binary, str(paths.conf)], stdin=devnull, capture_output=True, text=True, timeout=timeout,
            preexec_fn=lambda: os.umask(0o077),  # the log, AOF and ACL rewrites are private too
            start_new_session=True, cwd=paths.dir,
        )
    if proc.returncode != 0:
        return False, proc.stdout + proc.stderr
    deadline = time.monotonic() + timeout
    pid: int | None = None
    while time.monotonic() < deadline:
        if pid is None:
            try:
                pid = int(paths.pid.read_text().strip())
            except (OSError, ValueError):
                time.sleep(defaults.REDIS_START_POLL)
                continue
        try:
            p = psutil.Process(pid)
            alive = p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            break
        state.update(pid=pid, create_time=p.create_time(), started_at=time.time())
        try:
            cfg = admin_config(paths, state)
            check_connection(cfg.probe_client(defaults.REDIS_START_PING_TIMEOUT), cfg)
        except RushConfigError:
            time.sleep(defaults.REDIS_WAIT_POLL)
            continue
        write_json(paths.state, state)
        return True, ""
    text = ""
    if paths.log.exists():
        with open(paths.log, "rb") as f:
            f.seek(log_size)
            text = f.read().decode(errors="replace")
    if pid is not None and _still_running(pid):
        _terminate(pid, defaults.REDIS_KILL_WAIT)  # started but never answered: do not leave it behind
        text += "\n(it did not answer PING in time and was stopped)"
    return False, text


def _elsewhere(state: dict[str, Any]) -> str | None:
    """The machine the server was started on, when it is not this one (a state folder in a
    shared home directory is seen from every node: a pid means nothing on another)."""
    machine = state.get("machine")
    return machine if machine and machine != socket.gethostname() else None


def _running_elsewhere(state: dict[str, Any]) -> bool:
    try:
        cfg = client_config(state, password=None)
        client = cfg.probe_client(defaults.REDIS_PING_TIMEOUT)
        client.ping()
        return True
    except redis.AuthenticationError:
        return True  # it answers, and wants the password
    except (redis.RedisError, OSError, RushConfigError) as e:
        return "NOAUTH" in str(e) or "WRONGPASS" in str(e)


def _check_machine(paths: Paths, state: dict[str, Any], action: str) -> None:
    machine = _elsewhere(state)
    if machine and (action == "stop" or _running_elsewhere(state)):
        raise RushConfigError(
            f"the Redis of {paths.dir} was started on {machine}, not on this machine ({socket.gethostname()}): "
            f"run `rushhpc redis {action}` there (its pid means nothing here)"
        )


def _still_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid`` and wait for it to end (a zombie has ended)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _still_running(pid):
            return True
        time.sleep(defaults.REDIS_WAIT_POLL)
    return not _still_running(pid)


def status(directory: Path) -> dict[str, Any]:
    """The truth about the server of this state folder: from its pid file, its process
    and a PING as the admin.

    ``state`` is a `ServerState`: ``running`` (answers PING), ``not answering`` (its process runs, PING
    fails: ``error`` says why), ``stopped`` (no process) or ``absent`` (never started here).

    Example:
        >>> status(state_dir("sweep"))["state"]
        <ServerState.RUNNING: 'running'>
    """
    paths = Paths(Path(directory))
    st = read_json(paths.state)
    doc: dict[str, Any] = {"name": paths.dir.name, "dir": str(paths.dir)}
    if not st:
        doc["state"] = ServerState.ABSENT
        return doc
    cfg_fields = {k: st.get(k) for k in ("bind", "port", "host", "tls", "tls_ca", "tls_auth_clients", "appendonly",
                                         "fsync", "maxmemory", "binary")}
    doc.update(cfg_fields)
    doc.update(_usage(paths, st))
    machine = _elsewhere(st)
    doc["machine"] = st.get("machine")
    if machine:
        # started on another node (shared home directory): the pid cannot be checked from
        # here, PING tells
        doc["pid"] = None
        try:
            cfg = admin_config(paths, st)
            check_connection(cfg.probe_client(defaults.REDIS_PING_TIMEOUT), cfg)
            doc["state"] = ServerState.RUNNING
            doc["note"] = f"started on {machine}: its process cannot be checked from here"
        except RushConfigError as e:
            doc["state"] = ServerState.STOPPED if not _running_elsewhere(st) else ServerState.NOT_ANSWERING
            doc["error"] = f"started on {machine}: {e}"
        return doc
    proc = _our_process(paths, st)
    if proc is None:
        doc["state"] = ServerState.STOPPED
        doc["pid"] = None
        stale = _describe_pid(paths)
        if stale:
            doc["stale_pid_file"] = stale
        return doc
    doc["pid"] = proc.pid
    try:
        cfg = admin_config(paths, st)
        client = cfg.probe_client(defaults.REDIS_PING_TIMEOUT)
        check_connection(client, cfg)
        info = client.info()
        client.close()
    except (RushConfigError, redis.RedisError) as e:
        doc["state"] = ServerState.NOT_ANSWERING
        doc["error"] = str(e)
        return doc
    doc["state"] = ServerState.RUNNING
    doc["version"] = info.get("redis_version")
    doc["uptime_s"] = info.get("uptime_in_seconds")
    doc["used_memory"] = info.get("used_memory_human")
    doc["clients"] = info.get("connected_clients")
    doc["aof_enabled"] = bool(info.get("aof_enabled"))
    if st.get("tls_server_cert"):
        doc["tls_cert_expires"] = cert_expiry(st["tls_server_cert"])
    return doc


def stop(directory: Path, timeout: float = defaults.REDIS_STOP_TIMEOUT, force: bool = False) -> dict[str, Any]:
    """Stop the server `start` recorded in this folder, by pid, after checking the pid is
    that redis-server. SIGTERM (it writes its append-only file), then with ``force``
    SIGKILL after ``timeout``. Returns ``{"stopped": bool, "pid": ..., "message": ...}``.

    Example:
        >>> stop(state_dir("sweep"))["message"]
        'stopped redis-server pid 40123'
    """
    paths = Paths(Path(directory))
    with locked(paths):
        st = read_json(paths.state)
        _check_machine(paths, st, "stop")
        proc = _our_process(paths, st)
        if proc is None:
            stale = _describe_pid(paths)
            msg = f"no Redis runs from {paths.dir}" + (
                f"; its pid file names {stale}, not the redis-server started here: nothing was signalled" if stale else ""
            )
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    paths.pid.unlink()
            return {"stopped": False, "pid": None, "message": msg, "dir": str(paths.dir)}
        pid = proc.pid
        done = _terminate(pid, timeout)
        if not done and force:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            done = _terminate(pid, defaults.REDIS_KILL_WAIT)
        if not done:
            raise RushConfigError(f"redis-server pid {pid} did not stop within {timeout:g} s of SIGTERM; "
                                  "run again with --force to SIGKILL it")
        st["stopped_at"] = time.time()
        write_json(paths.state, st)
        with contextlib.suppress(FileNotFoundError):
            paths.pid.unlink()
        return {"stopped": True, "pid": pid, "message": f"stopped redis-server pid {pid}", "dir": str(paths.dir)}


def client_config(state: dict[str, Any], username: str | None = None, password: str | None = None) -> RedisConfig:
    """What a client uses (no password unless given): the URL host, the CA, a client cert.

    Example:
        >>> client_config(read_json(Paths(state_dir("sweep")).state), username="rushhpc-net1").url()
    """
    return RedisConfig(host=state["host"], port=int(state["port"]), username=username, password=password,
                       tls=bool(state.get("tls")), tls_ca=state.get("tls_ca"),
                       tls_cert=state.get("tls_client_cert"), tls_key=state.get("tls_client_key"))


def usage(cfg: RedisConfig, password_file: str | Path) -> dict[str, str]:
    """The exact ways to use a server: CLI options, Python, and ``RUSHHPC_REDIS_URL``.

    Example:
        >>> usage(client_config(state), Paths(state_dir("sweep")).password)["cli"]
        '--redis redis://login1:40123/0 --password-file /home/me/.rushhpc/redis/sweep/password'
    """
    url = cfg.public_url()
    pw = str(password_file)
    tls_opts = "".join(f" --{flag} {shlex.quote(v)}" for flag, v in
                       (("tls-ca", cfg.tls_ca), ("tls-cert", cfg.tls_cert), ("tls-key", cfg.tls_key)) if v)
    py_tls = "".join(f", {k}={v!r}" for k, v in (("tls_ca", cfg.tls_ca), ("tls_cert", cfg.tls_cert),
                                                   ("tls_key", cfg.tls_key)) if v)
    user = cfg.username or ""
    scheme = "rediss" if cfg.tls else "redis"
    env_url = f"{scheme}://{user}:$(cat {shlex.quote(pw)})@{cfg._hostport()}/{cfg.db}{cfg._query()}"
    return {
        "url": url,
        "password_file": pw,
        "cli": f"--redis {shlex.quote(url)} --password-file {shlex.quote(pw)}{tls_opts}",
        "python": f"rushhpc.redis_config(url={url!r}, password_file={pw!r}{py_tls})",
        "env": f'export RUSHHPC_REDIS_URL="{env_url}"',
    }


def _usage(paths: Paths, st: dict[str, Any]) -> dict[str, Any]:
    cfg = client_config(st)
    return {**usage(cfg, paths.password), "tls_ca": cfg.tls_ca, "tls_cert": cfg.tls_cert, "tls_key": cfg.tls_key}
