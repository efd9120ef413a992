"""Addresses and ports of a server: the host name clients use, whether a port is free and who holds it,
and a free port (for ``rushhpc redis start`` and the embedded Redis).
"""

from __future__ import annotations

import errno
import socket
from typing import Sequence

from rushhpc import defaults
from rushhpc.errors import RushConfigError

WILDCARDS = ("0.0.0.0", "::", "*")  # bind addresses that mean every interface


def url_host(bind: Sequence[str], host: str | None = None) -> str:
    """The host name clients should use: ``host``, else the first bind address, else (a
    wildcard bind) this machine's fully qualified name.

    Example:
        >>> url_host(["0.0.0.0"])
        'login1.cluster'
    """
    if host:
        return host
    plain = [b.lstrip("-") for b in bind]
    if any(b in WILDCARDS for b in plain):
        fqdn, name = socket.getfqdn(), socket.gethostname()
        if fqdn and "." in fqdn and not fqdn.startswith("localhost"):
            return fqdn
        return name or fqdn
    return plain[0]


def port_holder(port: int) -> str:
    """Who listens on ``port`` (pid and name when this user may see them).

    Example:
        >>> port_holder(6379)
        'pid 812 (/usr/bin/redis-server 127.0.0.1:6379)'
    """
    import psutil  # here: the embedded Redis (in every manager) needs none of this

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return "another process (not visible to this user)"
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            if c.pid is None:
                return "a process of another user"
            try:
                p = psutil.Process(c.pid)
                return f"pid {c.pid} ({' '.join(p.cmdline()[:3]) or p.name()})"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return f"pid {c.pid}"
    return "another process"


def port_free(port: int, bind: Sequence[str]) -> bool:
    """True when every bind address can take ``port`` (with SO_REUSEADDR, as Redis binds).

    Example:
        >>> port_free(6379, ["127.0.0.1"])
        False
    """
    for addr in bind:
        a = addr.lstrip("-")
        a = "0.0.0.0" if a == "*" else a
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((a, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return False
                if e.errno == errno.EADDRNOTAVAIL:
                    raise RushConfigError(f"cannot bind {a}: no such address on this machine") from None
                raise
    return True


def free_port(bind: Sequence[str] = ("127.0.0.1",)) -> int:
    """A port the system calls free on loopback that every ``bind`` address can take too.

    Free now, not reserved: a server that loses the race to bind it tries another (both callers do).

    Example:
        >>> free_port(["127.0.0.1", "10.0.0.5"])
        40123
    """
    for _ in range(defaults.REDIS_FREE_PORT_TRIES):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port_free(port, bind):
            return port
    raise RushConfigError("could not find a free port")
