"""What every subcommand shares: where Redis is, which network, and how to print.

A command that inspects or acts on an existing network never starts a private Redis:
with none configured it exits non-zero saying how to name one. Redis comes from
``--redis URL`` (with ``--password-file``, and ``--tls-ca``/``--tls-cert``/``--tls-key``
for TLS, ``--redis-cluster`` for a Redis Cluster), else ``RUSHHPC_REDIS_URL`` (with
``RUSHHPC_REDIS_CLUSTER=1`` for a cluster), else the plan file (``RUSHHPC_CONFIG``). A password
is never an argument, so none lands in ``ps`` output or shell history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, Iterable, Sequence

from rushhpc.errors import RushConfigError
from rushhpc.manager.plan import current_plan
from rushhpc.network.view import Network
from rushhpc.store.connection import RedisConfig, env_cluster, env_config, redis_config


def add_redis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", help="Redis URL without the password (default: $RUSHHPC_REDIS_URL)")
    p.add_argument("--password-file", metavar="FILE", help="0600 file whose first line is the Redis password")
    p.add_argument("--tls-ca", metavar="FILE", help="CA file that signed the server's TLS certificate (implies TLS)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate, for a server that asks for one")
    p.add_argument("--tls-key", metavar="FILE", help="0600 key file of --tls-cert")
    p.add_argument("--redis-cluster", action="store_true", default=None,
                   help="the Redis is a Redis Cluster, --redis any one node of it (default: $RUSHHPC_REDIS_CLUSTER)")


def add_network_options(p: argparse.ArgumentParser, positional: bool = False, json_flag: bool = True) -> None:
    """--network/-n, --redis, --password-file (and --json): every subcommand that talks to a network."""
    if positional:
        p.add_argument("network_pos", nargs="?", metavar="NETWORK", help="network id (or --network)")
    p.add_argument("--network", "-n", help="network id")
    add_redis_options(p)
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")


def redis_from_args(args: argparse.Namespace) -> RedisConfig:
    """The Redis a command talks to. Never an embedded one."""
    url = getattr(args, "redis", None)
    password_file = getattr(args, "password_file", None)
    tls = {k: getattr(args, k, None) for k in ("tls_ca", "tls_cert", "tls_key")}
    cluster = getattr(args, "redis_cluster", None)
    if url:
        return redis_config(url=url, password_file=password_file, **tls,
                            cluster=cluster if cluster is not None else env_cluster())
    cfg = env_config() or current_plan().config
    if cfg is None:
        raise RushConfigError(
            "no Redis is configured: pass --redis redis://HOST:PORT (with --password-file FILE), or set "
            "RUSHHPC_REDIS_URL, or a plan file in RUSHHPC_CONFIG; a command that inspects a network never "
            "starts a private Redis"
        )
    if password_file or any(tls.values()) or (cluster and not cfg.cluster):
        cfg = redis_config(url=cfg.url(), password_file=password_file, **tls, cluster=bool(cluster or cfg.cluster))
    return cfg


def network_name(args: argparse.Namespace) -> str:
    name = getattr(args, "network", None) or getattr(args, "network_pos", None)
    if not name:
        raise RushConfigError("which network? Pass --network NAME (rushhpc networks lists them)")
    return str(name)


def open_network(args: argparse.Namespace) -> Network:
    """The network named on the command line, as a `Network` view (it must exist)."""
    return Network.open(network_name(args), redis_from_args(args))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return one_line(str(v))


def one_line(text: str) -> str:
    """``text`` on one line: each line break (and the blanks around it) becomes `` ⏎ ``, so a table
    keeps one row per record (a traceback in a failed task's condition, issue 20 defect 6).

    Example:
        >>> one_line("ValueError: bad\n  second line\n")
        'ValueError: bad ⏎ second line'
    """
    lines = [line.strip() for line in text.splitlines()]
    return " ⏎ ".join(line for line in lines if line) if len(lines) > 1 else text.strip()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], max_width: int = 40,
          groups: Sequence[tuple[str, int]] = (), headers: dict[str, str] | None = None) -> str:
    """A plain text table a person can read: one line per row (line breaks folded), columns padded,
    long cells cut.

    ``groups``: a line above the header naming runs of columns, as (label, number of columns),
    ``("", n)`` for none, e.g. ``[("", 1), ("workers", 2), ("tasks", 4)]``. ``headers``: a column's
    header when it is not the upper-cased column name.

    Example:
        >>> print(table([{"a": 1, "b": "x\ny"}], ["a", "b"]))
        A  B
        1  x ⏎ y
    """
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    cut = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    names = [(headers or {}).get(c, c.upper()) for c in columns]
    widths = [max([len(n)] + [len(row[i]) for row in cut]) for i, n in enumerate(names)]
    i = 0
    for label, n in groups:  # a label wider than its columns widens the last of them
        span = sum(widths[i:i + n]) + 2 * (n - 1)
        if n and len(label) > span:
            widths[i + n - 1] += len(label) - span
        i += n
    lines = []
    if groups:
        parts, i = [], 0
        for label, n in groups:
            span = sum(widths[i:i + n]) + 2 * (n - 1)
            parts.append(label.upper().ljust(span) if label else " " * span)
            i += n
        lines.append("  ".join(parts).rstrip())
    lines.append("  ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cut]
    return "\n".join(lines)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, default=_json_default), flush=True)


def _json_default(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


def ago(ts: float | None, now: float) -> str | None:
    """Seconds since ``ts`` as a short text (``3s``, ``5m``, ``2h``)."""
    if ts is None:
        return None
    s = max(0.0, now - ts)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def confirm(question: str, yes: bool) -> bool:
    """True when ``--yes`` was given, or a person at a terminal answered y."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise RushConfigError(f"{question} needs confirmation: run it on a terminal, or pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def flatten_ids(items: Iterable[str]) -> list[str]:
    """Worker ids from positional arguments (``a b`` or ``a,b``)."""
    return [x for item in items for x in item.split(",") if x]
