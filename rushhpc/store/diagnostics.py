"""Why a Redis cannot be used, in the words of the interface the user came through.

`check_connection` turns every failure of a first PING (unreachable, a wrong password, not
Redis, a TLS mismatch, a stuck server) into a `RedisUnusableError` naming the cause and the
fix; `check_resolves`, `not_redis_reply`, `listens` and `tls_hint` are the probes it uses.
Below `rushhpc.store.connection`: a configuration is read through `Endpoint` (what
`RedisConfig` offers), so this module never imports it.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Protocol

import redis
import redis.cluster

from rushhpc import defaults
from rushhpc.errors import RushConfigError


class Endpoint(Protocol):
    """What the checks read of a Redis configuration (a `rushhpc.store.connection.RedisConfig`)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def db(self) -> int: ...
    @property
    def password(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def tls_ca(self) -> str | None: ...
    @property
    def tls_cert(self) -> str | None: ...
    @property
    def address(self) -> str: ...


# ----------------------------------------------------------------------------------
# Errors in the words of the interface the user came through (issue 20, defect 5f).
#
# A Redis that cannot be used is the same problem everywhere, but its fix is spelt
# differently: `redis_config(password_file=...)` in Python, `--password-file FILE` on the
# command line, `redis.password_file` in a sweep's YAML. The checks below build every
# wording at once and raise a `RedisUnusableError` that carries them all:
#
#   cfg.connect(interface="sweep")                 # str(error) in the sweep's words
#   check_connection(client, cfg, interface="cli")
#   except RushError as e: print(in_words_of(e, "cli"))   # translate an error raised in Python's words
#
# Python's wording is the default, so the Python API reads as before.
# ----------------------------------------------------------------------------------

INTERFACES = ("python", "cli", "sweep")

# What each interface calls the things a connection error asks the user to change.
WORDS: dict[str, dict[str, str]] = {
    "python": {
        "password": "redis_config(password_file=...) or in RUSHHPC_REDIS_URL (redis://:PASSWORD@host:port)",
        "credentials": "the password (redis_config(password=...) or password_file=...) and the username",
        "host": "the URL or redis_config(host=...)",
        "port": "the URL or redis_config(port=...)",
        "db": "in the URL path (redis://host:port/0) or redis_config(db=...)",
        "rediss": "a rediss:// URL or redis_config(tls=True)",
        "tls_ca": "tls_ca=...",
        "tls_client": "tls_cert=... and tls_key=...",
        "no_cluster": "drop cluster=True (and RUSHHPC_REDIS_CLUSTER) for a single server",
        "no_server": "Leave the config unset to use a private embedded Redis on this machine.",
    },
    "cli": {
        "password": "--password-file FILE (a 0600 file whose first line is the password) or in RUSHHPC_REDIS_URL "
                    "(redis://:PASSWORD@host:port)",
        "credentials": "the password (the file of --password-file, or RUSHHPC_REDIS_URL) and the user name in the URL",
        "host": "--redis URL (or RUSHHPC_REDIS_URL)",
        "port": "--redis URL (or RUSHHPC_REDIS_URL)",
        "db": "in the URL path (--redis redis://host:port/0)",
        "rediss": "a rediss:// URL in --redis (with --tls-ca FILE for a private CA)",
        "tls_ca": "--tls-ca FILE",
        "tls_client": "--tls-cert FILE and --tls-key FILE",
        "no_cluster": "drop --redis-cluster (and RUSHHPC_REDIS_CLUSTER) for a single server",
        "no_server": "The command line never starts a Redis of its own: name a running one with --redis "
                     "redis://HOST:PORT (or RUSHHPC_REDIS_URL), or start one with `rushhpc redis start` "
                     "(it prints the URL and password file to use).",
    },
    "sweep": {
        "password": "redis.password_file in the sweep file (redis: {url: redis://HOST:PORT, password_file: FILE}, "
                    "a 0600 file holding the password)",
        "credentials": "the password (the file of redis.password_file) and redis.username",
        "host": "redis.url (or redis.host)",
        "port": "redis.url (or redis.port)",
        "db": "redis.db (or the URL path, redis://host:port/0)",
        "rediss": "a rediss:// URL in redis.url (or redis.tls: true)",
        "tls_ca": "a rediss:// URL with ?ssl_ca_certs=FILE in redis.url",
        "tls_client": "?ssl_certfile=FILE&ssl_keyfile=FILE in redis.url",
        "no_cluster": "drop RUSHHPC_REDIS_CLUSTER for a single server",
        "no_server": "Use `redis: embedded` (the default) for a private Redis on this machine, or start a "
                     "shared one with `rushhpc redis start`.",
    },
}


def check_interface(interface: str) -> None:
    """Refuse an interface name other than python, cli or sweep."""
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}, got {interface!r}")


class RedisUnusableError(RushConfigError):
    """A Redis that cannot be used (unreachable, a wrong password, not Redis, ...), with the cause
    and the fix in the words of every interface.

    ``str(error)`` is the wording of ``interface`` (the one the error was raised for:
    ``"python"`` unless the caller passed another to `rushhpc.store.connection.RedisConfig.connect` or
    `check_connection`); `for_interface` gives any other. A command line or a sweep that
    catches an error raised in Python's words translates it with `in_words_of`.

    Example:
        >>> try:
        ...     redis_config("redis://127.0.0.1:1").connect()
        ... except RedisUnusableError as e:
        ...     print(e.for_interface("sweep"))  # "... Use `redis: embedded` (the default) ..."
    """

    def __init__(self, messages: dict[str, str], interface: str = "python") -> None:
        self.messages = dict(messages)
        self.interface = interface
        super().__init__(self.messages[interface])

    def for_interface(self, interface: str) -> str:
        """The message in the words of ``interface`` (python, cli or sweep)."""
        check_interface(interface)
        return self.messages[interface]

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across a process pool
        return (type(self), (self.messages, self.interface))


def unusable(render: Callable[[dict[str, str]], str], interface: str = "python") -> RedisUnusableError:
    """A `RedisUnusableError` whose message ``render`` writes from one interface's `WORDS`."""
    check_interface(interface)
    return RedisUnusableError({i: render(WORDS[i]) for i in INTERFACES}, interface)


def in_words_of(error: BaseException, interface: str) -> str:
    """The text of ``error`` for a user of ``interface``: a `RedisUnusableError` raised in
    Python's words (the default) is reworded; anything else is ``str(error)``.

    Example:
        >>> except RushError as e:
        ...     print(f"rushhpc: error: {in_words_of(e, 'cli')}", file=sys.stderr)
    """
    if isinstance(error, RedisUnusableError) and error.interface == "python":
        return error.for_interface(interface)
    return str(error)


def check_resolves(cfg: Endpoint, interface: str = "python") -> None:
    """Refuse a host name that does not resolve, naming it (before any other check)."""
    try:
        socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        why = e.strerror
        raise unusable(lambda w: (
            f"cannot reach Redis at {cfg.address}: the host name {cfg.host!r} does not resolve ({why}). "
            f"Check its spelling in {w['host']}, or use the server's IP address."
        ), interface) from None
    except (OSError, UnicodeError):
        pass  # anything else: let the connection attempt report it


def not_redis_reply(cfg: Endpoint, timeout: float = defaults.PORT_PROBE_TIMEOUT) -> str | None:
    """What a plain (non-TLS) port answers to ``PING``, when that is not Redis's protocol
    (e.g. ``'HTTP/1.0 400 Bad request'``); None when it speaks RESP, says nothing, or is TLS."""
    if cfg.tls:
        return None
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            data = s.recv(80)
    except OSError:
        return None
    if not data or data[:1] in b"+-:$*_,#!=(%~>|":
        return None
    return data.decode("latin-1").splitlines()[0][:60] if data.strip() else repr(data[:20])


def _not_redis(cfg: Endpoint, interface: str) -> RedisUnusableError | None:
    reply = not_redis_reply(cfg)
    if reply is None:
        return None
    return unusable(lambda w: (
        f"{cfg.address} answers, but it is not Redis: it replied {reply!r} to PING. Check the port in {w['port']} "
        "(Redis listens on 6379 by default; `rushhpc redis start` prints its URL) and the host."
    ), interface)


def listens(cfg: Endpoint, timeout: float = defaults.PORT_PROBE_TIMEOUT) -> bool:
    """True when something accepts a TCP connection on ``host:port`` (a server, Redis or not)."""
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_timeout(client: Any) -> float | None:
    """The socket timeout of a redis-py client, for the message (None when unknown)."""
    try:
        value = client.connection_pool.connection_kwargs.get("socket_timeout")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def check_connection(client: Any, cfg: Endpoint,
                     interface: str = "python") -> None:
    """PING through ``client`` (or the client a callable makes: a cluster client connects when
    made); turn every failure into a `RedisUnusableError` naming host:port and the fix, in the
    words of ``interface`` (``"python"``, ``"cli"`` or ``"sweep"``; every wording rides along,
    see `RedisUnusableError.for_interface`).

    Example:
        >>> check_connection(cfg.probe_client(), cfg, interface="cli")   # None, or the error
    """
    check_interface(interface)
    made = client
    try:
        if callable(client) and not isinstance(client, redis.Redis):
            made = client = client()
        client.ping()
        client.close()
    except redis.cluster.RedisClusterException as e:
        text = str(e)
        if "not enabled" in text.lower():
            raise unusable(lambda w: (
                f"Redis at {cfg.address} is not a cluster node (cluster mode is not enabled there): {w['no_cluster']}"
            ), interface) from None
        raise unusable(lambda w: f"cannot use the Redis Cluster at {cfg.address}: {text}", interface) from None
    except redis.InvalidResponse:
        raise (_not_redis(cfg, interface) or unusable(lambda w: (
            f"{cfg.address} answers, but not in Redis's protocol: check the port and the host in {w['port']} "
            f"(and use {w['rediss']} for a TLS port)."
        ), interface)) from None
    except redis.AuthenticationError as e:
        err = str(e).rstrip(".")
        if cfg.password is None:
            raise unusable(lambda w: (
                f"Redis at {cfg.address} requires a password. Pass it with {w['password']}."
            ), interface) from None
        raise unusable(lambda w: (
            f"Redis at {cfg.address} refused the credentials ({err}). Check {w['credentials']}."
        ), interface) from None
    except redis.ResponseError as e:
        err = str(e)
        if "NOAUTH" in err or "WRONGPASS" in err:
            raise unusable(lambda w: (
                f"Redis at {cfg.address} requires a password ({err}). Pass it with {w['password']}."
            ), interface) from None
        if "DB index is out of range" in err:
            raise unusable(lambda w: (
                f"Redis at {cfg.address} has no database {cfg.db} ({err}): use a db index from 0 to the "
                f"server's `databases` setting minus one (16 databases by default), {w['db']}."
            ), interface) from None
        raise unusable(lambda w: f"Redis at {cfg.address} answered PING with an error: {err}", interface) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        if not isinstance(e, redis.TimeoutError) and isinstance(e, redis.ConnectionError):
            other = _not_redis(cfg, interface)  # e.g. an HTTP server that closed the connection on our PING
            if other is not None:
                raise other from None
        err = str(e)
        cause = err.rstrip(".")
        if not cfg.tls and isinstance(e, (redis.TimeoutError, TimeoutError)) and listens(cfg):
            # the port accepts connections, yet nothing came back to PING: not "is redis-server running"
            waited = _read_timeout(made)
            within = f" within {waited:g} s" if waited else ""
            raise unusable(lambda w: (
                f"something listens on {cfg.address} but does not answer as Redis: it accepted the connection "
                f"and sent nothing back to PING{within}. It may be another service on a wrong port, a TLS port, or "
                "a Redis server that is stuck (busy with a long command or script, or stopped). Check the port in "
                f"{w['port']}; for a TLS port use {w['rediss']}; `redis-cli -h {cfg.host} -p {cfg.port} ping` "
                "tells which."
            ), interface) from None
        if tls_hint(err, cfg):
            raise unusable(lambda w: (
                f"cannot reach Redis at {cfg.address}: {cause}. {tls_hint(err, cfg, w)}"
            ), interface) from None
        raise unusable(lambda w: (
            f"cannot reach Redis at {cfg.address}: {cause}. Is redis-server running there and "
            f"reachable from this host (bind address, firewall, port)? {w['no_server']}"
        ), interface) from None


def tls_hint(error: str, cfg: Endpoint, words: dict[str, str] | None = None) -> str:
    """What to do about a failed connection that looks like a TLS problem ('' when it does not),
    naming the options in ``words`` (one interface's `WORDS`; Python's by default)."""
    w = words or WORDS["python"]
    text = error.lower()
    if not cfg.tls:
        if "connection reset" in text or "closed by server" in text or "connection closed" in text:
            return f"If that port speaks TLS, use {w['rediss']} (with {w['tls_ca']} for a private CA)."
        return ""
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        if "hostname" in text or "ip address mismatch" in text:
            return (f"The server's certificate does not name {cfg.host!r}: connect by a name or address the "
                    "certificate lists, or issue one that lists it.")
        where = f"the CA file {cfg.tls_ca}" if cfg.tls_ca else f"the system's CAs (pass {w['tls_ca']})"
        return f"The server's certificate is not signed by {where}, or it has expired."
    if "certificate required" in text or "alert certificate" in text or "peer did not return a certificate" in text:
        if cfg.tls_cert:
            return f"The server refused the client certificate {cfg.tls_cert}: is it signed by a CA the server trusts?"
        return f"The server asks for a client certificate: pass {w['tls_client']}."
    if "wrong version number" in text or "record layer failure" in text or "unknown protocol" in text:
        return "Does that port speak TLS? A rediss:// URL needs the server's tls-port; use redis:// for a plain port."
    if "eof occurred" in text or "unexpected eof" in text or "connection reset" in text or "closed by server" in text:
        # with TLS 1.3 a server that wants a client certificate may just close the connection
        if not cfg.tls_cert:
            return ("The server closed the TLS connection: it probably asks for a client certificate (pass "
                    f"{w['tls_client']}); or that port does not speak TLS.")
        return (f"The server closed the TLS connection: does it trust the CA of the client certificate "
                f"{cfg.tls_cert}? Does that port speak TLS?")
    if "timeout" in text or "timed out" in text:
        return ("A TLS handshake that gets no answer: is that a plain (non-TLS) port? Use redis:// for it, "
                "or the server's tls-port.")
    if "ssl" in text or "tls" in text:
        return "Check the CA, certificate and key files and the server's TLS settings."
    return ""
