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
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse

import redis
import redis.cluster
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from rushhpc import defaults
from rushhpc.errors import RushConfigError
from rushhpc.store.diagnostics import check_connection, check_interface, check_resolves, unusable
from rushhpc.store.secrets import check_private_file, read_secret_file, tls_file, write_private

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
            kw["ssl_ca_certs"] = tls_file(self.tls_ca, "TLS CA file (tls_ca)")
        if self.tls_cert:
            kw["ssl_certfile"] = tls_file(self.tls_cert, "TLS certificate file (tls_cert)")
            if not self.tls_key:  # the key is inside the certificate file
                check_private_file(self.tls_cert, "TLS certificate file holding its key (tls_cert without tls_key)")
        if self.tls_key:
            if not self.tls_cert:
                raise RushConfigError("tls_key needs tls_cert: a client key is useless without its certificate")
            check_private_file(self.tls_key, "TLS key file (tls_key)")
            kw["ssl_keyfile"] = tls_file(self.tls_key, "TLS key file (tls_key)")
        return kw

    def client(self, decode_responses: bool = True, single_connection: bool = False, **kwargs: Any) -> RedisClient:
        """A redis-py client; `connect` checks it answers.

        For a cluster (``cluster``) a ``redis.cluster.RedisCluster`` that discovers the nodes
        from this one; ``single_connection`` does not apply to it (one pool per node). A
        given ``cls`` (the worker's `rushhpc.store.wire.WorkerRedis`) is a one-node client: use
        it with `node_for`.
        """
        common: dict[str, Any] = dict(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            **self.tls_options(),
            decode_responses=decode_responses,
            socket_connect_timeout=kwargs.pop("socket_connect_timeout", defaults.CONNECT_TIMEOUT),
            socket_keepalive=True,
            health_check_interval=kwargs.pop("health_check_interval", defaults.CLIENT_HEALTH_CHECK_INTERVAL),
            # one node: through a Redis restart or a dropped connection, reconnect with backoff, about 20 s in
            # all; a cluster: redis-py reads only the number of retries from it (and re-reads the slot map on a
            # MOVED, a failover or a lost node in between)
            retry=kwargs.pop("retry", _client_retry()),
        )
        if self.cluster and "cls" not in kwargs:
            return redis.cluster.RedisCluster(**common, **kwargs)
        cls = kwargs.pop("cls", redis.Redis)
        single = {"single_connection_client": single_connection} if cls is redis.Redis else {}
        return cls(**common, db=self.db, **single, **kwargs)

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

    def probe_client(self, timeout: float = defaults.PROBE_TIMEOUT) -> RedisClient:
        """A client that tries once: a wrong password or a closed port fails at once, not after retries."""
        return self.client(retry=Retry(NoBackoff(), 0), socket_connect_timeout=timeout, socket_timeout=timeout)


def _client_retry() -> Retry:
    """A manager's retries: exponential backoff through a Redis restart or a dropped connection (defaults.CLIENT_*)."""
    return Retry(ExponentialBackoff(cap=defaults.CLIENT_RETRY_CAP, base=defaults.CLIENT_RETRY_BASE), defaults.CLIENT_RETRIES)


def is_cluster(client: RedisClient) -> bool:
    """True for a ``redis.cluster.RedisCluster`` client."""
    return isinstance(client, redis.cluster.RedisCluster)


def node_client(client: RedisClient, key: str) -> RedisClient:
    """The client of the one node that serves ``key``: ``client`` itself, or for a cluster
    client the plain client (with its pool) of the primary owning the key's slot."""
    if not is_cluster(client):
        return client
    return client.get_node_from_key(key).redis_connection


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
    return write_private(path, json.dumps(credentials(cfg)))  # atomic: a worker never reads a half-written file


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
