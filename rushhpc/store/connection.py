"""Where Redis is: `RedisConfig`, `redis_config`, the client, the cluster helpers.

Resolution order for the Redis of a manager (first that applies):
an explicit ``config`` argument, the plan's ``config``, a YAML plan named by
``RUSHHPC_CONFIG``, ``RUSHHPC_REDIS_URL`` / ``REDIS_URL``, and finally an
embedded private ``redis-server`` (see `rushhpc.server.embedded`).

A Redis Cluster is named by ``cluster=True`` (``cluster: true`` in a plan's ``config``
mapping, ``--redis-cluster`` on the command line, ``RUSHHPC_REDIS_CLUSTER=1`` beside
``RUSHHPC_REDIS_URL``): the URL is then any one node of the cluster. Not by the URL: there is
no standard scheme for it, and redis-py's ``from_url`` would reject a query parameter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse

import redis
import redis.cluster
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from rushhpc import defaults
from rushhpc.errors import RushConfigError

# A redis-py client made with decode_responses=True. redis-py's annotations type every reply
# as bytes | str | Awaitable (one set for sync, async and both decodings), which says nothing
# here; the alias keeps that noise out while every other name stays checked.
RedisClient = Any


# URL query parameters naming the TLS files (redis-py's own names, so a URL works with
# redis.from_url too) -> RedisConfig fields
TLS_QUERY = {"ssl_ca_certs": "tls_ca", "ssl_certfile": "tls_cert", "ssl_keyfile": "tls_key"}


@dataclasses.dataclass(frozen=True)
class RedisConfig:
    """How to reach Redis. Build it with `redis_config`; the password is never printed.

    With ``tls`` the connection is TLS (``rediss://``) and the server's certificate is
    verified against ``tls_ca`` (a CA file; default: the system's CAs), host name included.
    ``tls_cert``/``tls_key`` are a client certificate and its key, for a server that asks
    for one (``tls-auth-clients yes``). They are paths, never the secrets themselves; the
    key file must be 0600.

    With ``cluster`` the server is a Redis Cluster and ``host:port`` any one of its nodes:
    `client` makes a ``redis.cluster.RedisCluster`` (same password, TLS and retries), and
    `node_for` the plain client of the primary that owns one network's slot.

    Example:
        >>> cfg = redis_config(host="10.0.0.5", port=6380, password_file="~/.rushhpc/pw")
        >>> cfg.address
        '10.0.0.5:6380'
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    cluster: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = "***@" if self.password else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}" + (" (cluster)" if self.cluster else "")

    def url(self, tls_files: bool = True) -> str:
        """The full URL, password included: for credentials files only, never for argv or logs.

        The TLS file paths ride along as query parameters (``?ssl_ca_certs=...``, redis-py's
        names) unless ``tls_files=False``.
        """
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        return f"{scheme}://{auth}{self._hostport()}/{self.db}" + (self._query() if tls_files else "")

    def public_url(self) -> str:
        """The URL without the password (the user name stays): safe to print and to pass as ``--redis``."""
        scheme = "rediss" if self.tls else "redis"
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{scheme}://{user}{self._hostport()}/{self.db}"

    def _hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _query(self) -> str:
        q = {name: getattr(self, field) for name, field in TLS_QUERY.items() if getattr(self, field)}
        return "?" + urlencode(q, safe="/") if q else ""

    def tls_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments for this TLS setting (``{}`` without TLS).

        The certificate of the server is always verified, host name included; a key file
        other users can read is refused.
        """
        if not self.tls:
            return {}
        kw: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.tls_ca:
            kw["ssl_ca_certs"] = _tls_file(self.tls_ca, "TLS CA file (tls_ca)")
        if self.tls_cert:
            kw["ssl_certfile"] = _tls_file(self.tls_cert, "TLS certificate file (tls_cert)")
            if not self.tls_key:  # the key is inside the certificate file
                check_private_file(self.tls_cert, "TLS certificate file holding its key (tls_cert without tls_key)")
        if self.tls_key:
            if not self.tls_cert:
                raise RushConfigError("tls_key needs tls_cert: a client key is useless without its certificate")
            check_private_file(self.tls_key, "TLS key file (tls_key)")
            kw["ssl_keyfile"] = _tls_file(self.tls_key, "TLS key file (tls_key)")
        return kw

    def client(self, decode_responses: bool = True, single_connection: bool = False, **kwargs: Any) -> RedisClient:
        """A redis-py client; `connect` checks it answers.

        For a cluster (``cluster``) a ``redis.cluster.RedisCluster`` that discovers the nodes
        from this one; ``single_connection`` does not apply to it (one pool per node). A
        given ``cls`` (the worker's `rushhpc.store.wire.WorkerRedis`) is a one-node client: use
        it with `node_for`.
        """
        if self.cluster and "cls" not in kwargs:
            return redis.cluster.RedisCluster(
                host=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                **self.tls_options(),
                decode_responses=decode_responses,
                socket_connect_timeout=kwargs.pop("socket_connect_timeout", defaults.CONNECT_TIMEOUT),
                socket_keepalive=True,
                health_check_interval=kwargs.pop("health_check_interval", 30),
                # redis-py's cluster client reads only the number of retries from it (and
                # re-reads the slot map on a MOVED, a failover or a lost node in between)
                retry=kwargs.pop("retry", Retry(ExponentialBackoff(cap=2.0, base=0.05), 12)),
                **kwargs,
            )
        cls = kwargs.pop("cls", redis.Redis)
        return cls(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            **self.tls_options(),
            decode_responses=decode_responses,
            **({"single_connection_client": single_connection} if cls is redis.Redis else {}),
            socket_connect_timeout=kwargs.pop("socket_connect_timeout", defaults.CONNECT_TIMEOUT),
            socket_keepalive=True,
            health_check_interval=kwargs.pop("health_check_interval", 30),
            # through a Redis restart or a dropped connection: reconnect with backoff, about 20 s in all
            retry=kwargs.pop("retry", Retry(ExponentialBackoff(cap=2.0, base=0.05), 12)),
            **kwargs,
        )

    def node_for(self, key: str, known: list[tuple[str, int]] | None = None) -> "RedisConfig":
        """The configuration of the one node that serves ``key``: this one without a cluster,
        else the primary that owns the key's slot (asked of the cluster now), as a plain
        (``cluster=False``) configuration with the same credentials and TLS files.

        Every key of a network shares one hash tag, hence one slot and one node: a worker's
        and a heartbeat's single connection go there directly. ``known``: addresses of nodes
        seen before, asked when the named node does not answer (it may be the primary that
        died); the list is updated with every node the cluster reports.
        """
        if not self.cluster:
            return self
        error: Exception | None = None
        for host, port in [(self.host, self.port), *(a for a in known or () if a != (self.host, self.port))]:
            try:
                rc = dataclasses.replace(self, host=host, port=port).probe_client()
            except (redis.RedisError, redis.cluster.RedisClusterException) as e:
                error = e
                continue
            try:
                node = rc.get_node_from_key(key)
                if known is not None:
                    known[:] = sorted({(n.host, int(n.port)) for n in rc.get_nodes()})
            finally:
                rc.close()
            return dataclasses.replace(self, host=node.host, port=int(node.port), cluster=False)
        assert error is not None
        raise error

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    def connect(self, interface: str = "python", **kwargs: Any) -> RedisClient:
        """A client that has answered PING, or a `RedisUnusableError` that says why and what to do,
        in the words of ``interface`` (see `RedisUnusableError`).

        A Redis beyond loopback without a password is refused: anyone who can write to it
        could make the workers run code. ``RUSHHPC_ALLOW_NO_PASSWORD=1`` overrides this. A host
        name that does not resolve is reported as such first (a typo is the likelier cause).

        Example:
            >>> redis_config("redis://127.0.0.1:1").connect(interface="cli")
            Traceback (most recent call last):
            RedisUnusableError: cannot reach Redis at 127.0.0.1:1: ... start one with `rushhpc redis start` ...
        """
        check_interface(interface)
        if not self.loopback:
            check_resolves(self, interface)
        if not self.password and not self.loopback and os.environ.get("RUSHHPC_ALLOW_NO_PASSWORD") != "1":
            raise unusable(lambda w: (
                f"Redis at {self.address} is not on this machine and no password is configured: anyone who "
                f"can reach it could run code in your workers. Set requirepass on the server and pass the password "
                f"with {w['password']} (or set RUSHHPC_ALLOW_NO_PASSWORD=1 on a private network)."
            ), interface)
        check_connection(self.probe_client, self, interface)
        return self.client(**kwargs)

    def probe_client(self, timeout: float = 5.0) -> RedisClient:
        """A client that tries once: a wrong password or a closed port fails at once, not after retries."""
        return self.client(retry=Retry(NoBackoff(), 0), socket_connect_timeout=timeout, socket_timeout=timeout)


def is_cluster(client: RedisClient) -> bool:
    """True for a ``redis.cluster.RedisCluster`` client."""
    return isinstance(client, redis.cluster.RedisCluster)


def node_client(client: RedisClient, key: str) -> RedisClient:
    """The client of the one node that serves ``key``: ``client`` itself, or for a cluster
    client the plain client (with its pool) of the primary owning the key's slot."""
    if not is_cluster(client):
        return client
    return client.get_node_from_key(key).redis_connection


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
    ``"python"`` unless the caller passed another to `RedisConfig.connect` or
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


def check_resolves(cfg: RedisConfig, interface: str = "python") -> None:
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


def not_redis_reply(cfg: RedisConfig, timeout: float = 2.0) -> str | None:
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


def _not_redis(cfg: RedisConfig, interface: str) -> RedisUnusableError | None:
    reply = not_redis_reply(cfg)
    if reply is None:
        return None
    return unusable(lambda w: (
        f"{cfg.address} answers, but it is not Redis: it replied {reply!r} to PING. Check the port in {w['port']} "
        "(Redis listens on 6379 by default; `rushhpc redis start` prints its URL) and the host."
    ), interface)


def listens(cfg: RedisConfig, timeout: float = 2.0) -> bool:
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


def check_connection(client: RedisClient | Callable[[], RedisClient], cfg: RedisConfig,
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


def tls_hint(error: str, cfg: RedisConfig, words: dict[str, str] | None = None) -> str:
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


def redis_config(
    url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    db: int | None = None,
    username: str | None = None,
    password: str | None = None,
    password_file: str | os.PathLike | None = None,
    tls: bool | None = None,
    tls_ca: str | os.PathLike | None = None,
    tls_cert: str | os.PathLike | None = None,
    tls_key: str | os.PathLike | None = None,
    cluster: bool | None = None,
) -> RedisConfig:
    """Describe a Redis server. Keyword arguments override what the URL says.

    ``password_file`` (first line is the password) keeps the secret out of code.
    ``tls_ca`` (the CA file that signed the server's certificate), ``tls_cert`` and
    ``tls_key`` (a client certificate, for a server with ``tls-auth-clients yes``) are
    paths; any of them means TLS. In a URL they are the query parameters
    ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile``.

    ``cluster=True``: the server is a Redis Cluster and the URL (or host/port) names any one
    of its nodes; database 0 only (a cluster has no other).

    Example:
        >>> redis_config("redis://:s3cret@login1:6379/0").address
        'login1:6379'
        >>> redis_config("rediss://login1:6380", password_file="~/.rushhpc/pw", tls_ca="~/ca.crt").tls
        True
    """
    base = RedisConfig()
    if url:
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise RushConfigError(f"Redis URL must start with redis:// or rediss://, got {u.scheme or 'no'} scheme")
        try:
            u_port = u.port
        except ValueError:
            raise RushConfigError("Redis URL has an invalid port") from None
        path_db = u.path.lstrip("/")
        query: dict[str, str] = {}
        for name, value in parse_qsl(u.query, keep_blank_values=True):
            if name not in TLS_QUERY:
                raise RushConfigError(
                    f"Redis URL has an unknown query parameter {name!r}; known: {', '.join(TLS_QUERY)}"
                )
            query[TLS_QUERY[name]] = value
        base = RedisConfig(
            host=u.hostname or "127.0.0.1",
            port=u_port or 6379,
            db=int(path_db) if path_db.isdigit() else 0,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password is not None else None,
            tls=u.scheme == "rediss" or bool(query),
            tls_ca=query.get("tls_ca") or None,
            tls_cert=query.get("tls_cert") or None,
            tls_key=query.get("tls_key") or None,
        )
    if password_file is not None:
        password = read_secret_file(password_file)
    files = {
        "tls_ca": _abspath(tls_ca) if tls_ca is not None else base.tls_ca,
        "tls_cert": _abspath(tls_cert) if tls_cert is not None else base.tls_cert,
        "tls_key": _abspath(tls_key) if tls_key is not None else base.tls_key,
    }
    given = any(x is not None for x in (tls_ca, tls_cert, tls_key))
    if tls is False and given:
        raise RushConfigError("tls=False contradicts tls_ca/tls_cert/tls_key: TLS files mean a TLS connection")
    cfg = RedisConfig(
        host=host if host is not None else base.host,
        port=int(port) if port is not None else base.port,
        db=int(db) if db is not None else base.db,
        username=username if username is not None else base.username,
        password=password if password is not None else base.password,
        tls=tls if tls is not None else (base.tls or given),
        **files,
        cluster=bool(cluster),
    )
    if cfg.cluster and cfg.db != 0:
        raise RushConfigError(f"a Redis Cluster has database 0 only, got database {cfg.db} (drop /{cfg.db} from the URL)")
    cfg.tls_options()  # missing files and a readable key are errors now, not at the first connection
    return cfg


def _abspath(path: str | os.PathLike) -> str:
    """An absolute path (a worker reads it from another directory)."""
    return str(Path(path).expanduser().absolute())


def _tls_file(path: str, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise RushConfigError(f"{what} {p} does not exist or is not a file")
    if not os.access(p, os.R_OK):
        raise RushConfigError(f"{what} {p} is not readable")
    return str(p)


def check_private_file(path: str | os.PathLike, what: str = "password file") -> Path:
    """Refuse a secret file other users can read or write (what a 0600 file passes)."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise RushConfigError(f"cannot read {what} {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RushConfigError(f"{what} {p} is readable by other users; run: chmod 600 {p}")
    return p


def read_secret_file(path: str | os.PathLike) -> str:
    """First line of a secret file; refuse files other users can read."""
    p = check_private_file(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise RushConfigError(f"cannot read password file {p}: {e.strerror}") from None
    return text.splitlines()[0].strip() if text else ""


def as_config(config: RedisConfig | str | dict | None) -> RedisConfig | None:
    """Accept a `RedisConfig`, a URL string or a dict of `redis_config` arguments."""
    if config is None or isinstance(config, RedisConfig):
        return config
    if isinstance(config, str):
        return redis_config(url=config)
    if isinstance(config, dict):
        try:
            return redis_config(**config)
        except TypeError as e:
            raise RushConfigError(f"bad Redis config {sorted(config)}: {e}") from None
    raise RushConfigError(f"config must be a URL, a dict or redis_config(...), got {type(config).__name__}")


def credentials(cfg: RedisConfig) -> dict[str, Any]:
    """What a worker process needs to reach Redis, as a JSON-ready dict: the URL (password
    included) and the TLS file paths. The inverse of `from_credentials`.

    Example:
        >>> credentials(redis_config("rediss://:pw@h:6380", tls_ca="/etc/ca.crt"))
        {'url': 'rediss://:pw@h:6380/0', 'tls_ca': '/etc/ca.crt'}
    """
    doc: dict[str, Any] = {"url": cfg.url(tls_files=False)}
    for field in ("tls_ca", "tls_cert", "tls_key"):
        if getattr(cfg, field):
            doc[field] = getattr(cfg, field)
    if cfg.cluster:
        doc["cluster"] = True
    return doc


def from_credentials(doc: dict[str, Any]) -> RedisConfig:
    """The `RedisConfig` of a `credentials` dict."""
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        raise RushConfigError("credentials must be a JSON object with a 'url'")
    return redis_config(url=doc["url"], tls_ca=doc.get("tls_ca"), tls_cert=doc.get("tls_cert"),
                        tls_key=doc.get("tls_key"), cluster=doc.get("cluster") is True)


def write_credentials(path: Path, cfg: RedisConfig) -> Path:
    """Write a 0600 JSON credentials file a worker reads (never the script or argv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(credentials(cfg), f)
    os.replace(tmp, path)  # a worker never reads a half-written file
    return path


def read_credentials(path: str | os.PathLike) -> RedisConfig:
    """Read a credentials file written by `write_credentials`."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise RushConfigError(
            f"cannot read the credentials file {p}: {e.strerror}. The worker must see the manager's run "
            "directory (a shared file system on a cluster)."
        ) from None
    except ValueError:
        raise RushConfigError(f"credentials file {p} is not valid JSON") from None
    try:
        return from_credentials(data)
    except RushConfigError as e:
        raise RushConfigError(f"credentials file {p}: {e}") from None


def validate_heartbeat(period: float | None, expire: float | None) -> None:
    """Refuse a heartbeat that would declare healthy workers lost."""
    if period is not None and period <= 0:
        raise RushConfigError(f"heartbeat_period must be > 0 seconds, got {period}")
    if expire is not None and expire <= 0:
        raise RushConfigError(f"heartbeat_expire must be > 0 seconds, got {expire}")
    p = period if period is not None else defaults.HEARTBEAT_PERIOD
    e = expire if expire is not None else max(defaults.HEARTBEAT_EXPIRE, 3 * p)
    if e <= p:
        raise RushConfigError(
            f"heartbeat_expire ({e} s) must be larger than heartbeat_period ({p} s), "
            "ideally 3x or more: a single late beat would declare a healthy worker lost"
        )


def heartbeat_settings(period: float | None, expire: float | None) -> tuple[float, float]:
    """Defaults: period 10 s, expire max(60 s, 3 x period)."""
    validate_heartbeat(period, expire)
    p = float(period) if period is not None else defaults.HEARTBEAT_PERIOD
    e = float(expire) if expire is not None else max(defaults.HEARTBEAT_EXPIRE, 3 * p)
    return p, e


def env_cluster() -> bool:
    """``RUSHHPC_REDIS_CLUSTER=1`` (or ``true``/``yes``): the Redis of the environment is a cluster."""
    value = os.environ.get("RUSHHPC_REDIS_CLUSTER", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise RushConfigError(f"RUSHHPC_REDIS_CLUSTER must be 1 or 0, got {value!r}")


def env_config() -> RedisConfig | None:
    """The Redis named by ``RUSHHPC_REDIS_URL`` or ``REDIS_URL``, if any (a cluster with
    ``RUSHHPC_REDIS_CLUSTER=1``)."""
    url = os.environ.get("RUSHHPC_REDIS_URL") or os.environ.get("REDIS_URL")
    return redis_config(url=url, cluster=env_cluster()) if url else None
