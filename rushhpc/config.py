"""Where Redis is, and the process-wide plan (`rush_plan`).

Resolution order for the Redis of a manager (first that applies):
an explicit ``config`` argument, the plan's ``config``, a YAML plan named by
``RUSHHPC_CONFIG``, ``RUSHHPC_REDIS_URL`` / ``REDIS_URL``, and finally an
embedded private ``redis-server`` (see `rushhpc.embedded`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import defaults
from .errors import RushConfigError
from .registry import check_worker_type

# A redis-py client made with decode_responses=True. redis-py's annotations type every reply
# as bytes | str | Awaitable (one set for sync, async and both decodings), which says nothing
# here; the alias keeps that noise out while every other name stays checked.
RedisClient = Any


@dataclasses.dataclass(frozen=True)
class RedisConfig:
    """How to reach Redis. Build it with `redis_config`; the password is never printed.

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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = "***@" if self.password else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def url(self) -> str:
        """The full URL, password included: for credentials files only, never for argv or logs."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def client(self, decode_responses: bool = True, single_connection: bool = False, **kwargs: Any) -> RedisClient:
        """A redis-py client; `connect` checks it answers."""
        cls = kwargs.pop("cls", redis.Redis)
        return cls(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            ssl=self.tls,
            decode_responses=decode_responses,
            **({"single_connection_client": single_connection} if cls is redis.Redis else {}),
            socket_connect_timeout=kwargs.pop("socket_connect_timeout", defaults.CONNECT_TIMEOUT),
            socket_keepalive=True,
            health_check_interval=kwargs.pop("health_check_interval", 30),
            **kwargs,
        )

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    def connect(self, **kwargs: Any) -> RedisClient:
        """A client that has answered PING, or a `RushConfigError` that says why and what to do.

        A Redis beyond loopback without a password is refused: anyone who can write to it
        could make the workers run code. ``RUSHHPC_ALLOW_NO_PASSWORD=1`` overrides this.
        """
        if not self.password and not self.loopback and os.environ.get("RUSHHPC_ALLOW_NO_PASSWORD") != "1":
            raise RushConfigError(
                f"Redis at {self.address} is not on this machine and no password is configured: anyone who "
                "can reach it could run code in your workers. Set requirepass on the server and pass "
                "redis_config(password_file=...) (or set RUSHHPC_ALLOW_NO_PASSWORD=1 on a private network)."
            )
        check_connection(self.probe_client(), self)
        return self.client(**kwargs)

    def probe_client(self, timeout: float = 5.0) -> RedisClient:
        """A client that tries once: a wrong password or a closed port fails at once, not after retries."""
        return self.client(retry=Retry(NoBackoff(), 0), socket_connect_timeout=timeout, socket_timeout=timeout)


def check_connection(client: RedisClient, cfg: RedisConfig) -> None:
    """PING through ``client``; turn every failure into an error naming host:port and the fix."""
    try:
        client.ping()
        client.close()
    except redis.AuthenticationError as e:
        if cfg.password is None:
            raise RushConfigError(
                f"Redis at {cfg.address} requires a password. Pass it with "
                "redis_config(password_file=...) or in RUSHHPC_REDIS_URL (redis://:PASSWORD@host:port)."
            ) from None
        raise RushConfigError(
            f"Redis at {cfg.address} refused the credentials ({e}). Check the password "
            "(redis_config(password=...) or password_file=...) and the username."
        ) from None
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise RushConfigError(
                f"Redis at {cfg.address} requires a password ({e}). Pass it with "
                "redis_config(password_file=...) or in RUSHHPC_REDIS_URL."
            ) from None
        raise RushConfigError(f"Redis at {cfg.address} answered PING with an error: {e}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise RushConfigError(
            f"cannot reach Redis at {cfg.address}: {e}. Is redis-server running there and "
            "reachable from this host (bind address, firewall, port)? Leave the config unset to "
            "use a private embedded Redis on this machine."
        ) from None


def redis_config(
    url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    db: int | None = None,
    username: str | None = None,
    password: str | None = None,
    password_file: str | os.PathLike | None = None,
    tls: bool | None = None,
) -> RedisConfig:
    """Describe a Redis server. Keyword arguments override what the URL says.

    ``password_file`` (first line is the password) keeps the secret out of code.

    Example:
        >>> redis_config("redis://:s3cret@login1:6379/0").address
        'login1:6379'
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
        base = RedisConfig(
            host=u.hostname or "127.0.0.1",
            port=u_port or 6379,
            db=int(path_db) if path_db.isdigit() else 0,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password is not None else None,
            tls=u.scheme == "rediss",
        )
    if password_file is not None:
        password = read_secret_file(password_file)
    return RedisConfig(
        host=host if host is not None else base.host,
        port=int(port) if port is not None else base.port,
        db=int(db) if db is not None else base.db,
        username=username if username is not None else base.username,
        password=password if password is not None else base.password,
        tls=tls if tls is not None else base.tls,
    )


def read_secret_file(path: str | os.PathLike) -> str:
    """First line of a secret file; refuse files other users can read."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text()
    except OSError as e:
        raise RushConfigError(f"cannot read password file {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RushConfigError(f"password file {p} is readable by other users; run: chmod 600 {p}")
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


def write_credentials(path: Path, cfg: RedisConfig) -> Path:
    """Write a 0600 JSON credentials file a worker reads (never the script or argv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump({"url": cfg.url()}, f)
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
    return redis_config(url=data["url"])


# --------------------------------------------------------------------------
# The plan: process-wide defaults, as rush::rush_plan.
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """The process-wide plan (`rush_plan`, or the YAML file named by ``RUSHHPC_CONFIG``).

    Fields left None take the defaults of `rushhpc.defaults` where they are used.

    Example:
        >>> Plan(n_workers=4, worker_type="slurm").worker_type
        'slurm'
    """

    n_workers: int | None = None
    config: RedisConfig | None = None
    worker_type: str = "local"
    log_thresholds: dict[str, str | int] | None = None
    large_objects_path: str | None = None
    start_worker_timeout: float | None = None
    heartbeat_period: float | None = None
    heartbeat_expire: float | None = None
    launcher_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_object_size: int | None = None
    run_dir: str | None = None
    source: str = dataclasses.field(default="", repr=False, compare=False)  # where it was read from

    def __post_init__(self) -> None:
        where = f"plan file {self.source}: " if self.source else ""
        try:
            check_worker_type(self.worker_type or "local")
        except RushConfigError as e:
            raise RushConfigError(where + str(e)) from None
        self.worker_type = self.worker_type or "local"
        n = self.n_workers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise RushConfigError(f"{where}n_workers must be a positive integer, got {n!r}")
        try:
            validate_heartbeat(self.heartbeat_period, self.heartbeat_expire)
        except RushConfigError as e:
            raise RushConfigError(where + str(e)) from None
        self.config = as_config(self.config)
        self.launcher_options = dict(self.launcher_options or {})
        if self.large_objects_path is not None:
            self.large_objects_path = str(self.large_objects_path)
        if self.run_dir is not None:
            self.run_dir = str(self.run_dir)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}


PLAN_KEYS = tuple(f.name for f in dataclasses.fields(Plan) if f.name != "source")

_PLAN: Plan | None = None


def rush_plan(
    n_workers: int | None = None,
    config: RedisConfig | str | dict | None = None,
    worker_type: str = "local",
    log_thresholds: dict[str, str | int] | None = None,
    large_objects_path: str | os.PathLike | None = None,
    start_worker_timeout: float | None = None,
    heartbeat_period: float | None = None,
    heartbeat_expire: float | None = None,
    launcher_options: dict[str, Any] | None = None,
    max_object_size: int | None = None,
    run_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Set the process-wide plan that `rsh()` and `start_workers()` use.

    Example:
        >>> rush_plan(n_workers=4, config="redis://127.0.0.1:6379", heartbeat_period=5)
        >>> rush = rsh("sweep-1")
        >>> rush.start_workers(my_loop)   # 4 local workers
    """
    global _PLAN
    _PLAN = Plan(
        n_workers=n_workers, config=as_config(config), worker_type=worker_type, log_thresholds=log_thresholds,
        large_objects_path=str(large_objects_path) if large_objects_path else None,
        start_worker_timeout=start_worker_timeout, heartbeat_period=heartbeat_period,
        heartbeat_expire=heartbeat_expire, launcher_options=dict(launcher_options or {}),
        max_object_size=max_object_size, run_dir=str(run_dir) if run_dir else None,
    )
    return _PLAN.as_dict()


def current_plan() -> Plan:
    """The plan in force as a `Plan` (an empty one when none is set).

    Example:
        >>> current_plan().worker_type
        'local'
    """
    if _PLAN is not None:
        return _PLAN
    path = os.environ.get("RUSHHPC_CONFIG")
    if path:
        return load_plan_file(path)
    return Plan()


def rush_config() -> dict[str, Any]:
    """The plan in force (from `rush_plan` or the ``RUSHHPC_CONFIG`` YAML file), or ``{}``.

    Example:
        >>> rush_plan(n_workers=2); rush_config()["n_workers"]
        2
    """
    if _PLAN is None and not os.environ.get("RUSHHPC_CONFIG"):
        return {}
    return current_plan().as_dict()


def remove_rush_plan() -> None:
    """Forget the plan set by `rush_plan` (an ``RUSHHPC_CONFIG`` file still applies)."""
    global _PLAN
    _PLAN = None


def rush_available() -> bool:
    """True while a plan is in force."""
    return bool(rush_config())


def load_plan_file(path: str | os.PathLike) -> Plan:
    """Read a YAML plan (the arguments of `rush_plan`); errors name the file and the key."""
    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise RushConfigError(f"cannot read plan file {p} (RUSHHPC_CONFIG): {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RushConfigError(f"plan file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RushConfigError(f"plan file {p} must hold a mapping of rush_plan arguments")
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise RushConfigError(f"plan file {p}: unknown key(s) {unknown}; known: {list(PLAN_KEYS)}")
    data = {k: v for k, v in data.items() if v is not None}
    return Plan(**data, source=str(p))


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


def env_config() -> RedisConfig | None:
    """The Redis named by ``RUSHHPC_REDIS_URL`` or ``REDIS_URL``, if any."""
    url = os.environ.get("RUSHHPC_REDIS_URL") or os.environ.get("REDIS_URL")
    return redis_config(url=url) if url else None
