"""Every view reads through rushhpc/network/ (issue 18): the CLI and the dashboard issue no
Redis command themselves. An AST scan of rushhpc/ui/**/*.py: no ``.connector`` or
``.protocol`` (the network view's connection and scripts), no command issued on a ``.client``
(a connection is only handed to `Network`), no pipeline, no ``execute_command``, no method
spelled as a Redis read that a dict or a string does not have. No Redis: a unit test.
"""

from __future__ import annotations

import ast
from pathlib import Path

UI = Path(__file__).resolve().parents[2] / "rushhpc" / "ui"

# attributes that reach past the network view (its connection, its Lua scripts)
PAST_THE_VIEW = {"connector", "protocol", "pipeline", "execute_command", "eval", "evalsha", "register_script"}
# Redis commands as redis-py methods; the ones dicts/strings/modules also have (get, keys, set, type,
# time, delete, exists) are caught through PAST_THE_VIEW or the .client rule instead
REDIS_METHODS = {"hget", "hgetall", "hmget", "hset", "hkeys", "hlen", "hexists", "xrange", "xrevrange", "xread", "xlen",
                 "scan", "scan_iter", "hscan_iter", "smembers", "scard", "sismember", "lrange", "llen", "lindex", "zrange",
                 "mget", "ttl", "pttl", "info", "dbsize", "rpush", "lpush", "sadd", "srem", "expire"}


def raw_redis(path: Path) -> list[str]:
    """``line: what`` for every raw Redis access in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in PAST_THE_VIEW or node.attr in REDIS_METHODS:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node.value, ast.Attribute) and node.value.attr == "client":
            found.append(f"{node.lineno}: .client.{node.attr}")
    return found


def test_the_scan_finds_raw_reads():
    src = "net.connector.get('k')\nx.client.time()\nr.hgetall(k)\nd.get('k')\nNetwork(n, c, client=self.client)\n"
    tree = ast.parse(src)
    hits = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and (n.attr in PAST_THE_VIEW | REDIS_METHODS
                 or (isinstance(n.value, ast.Attribute) and n.value.attr == "client"))]
    assert sorted(hits) == ["connector", "hgetall", "time"], hits


def test_ui_reads_through_the_network_view():
    problems = {p.relative_to(UI.parent.parent).as_posix(): hits
                for p in sorted(UI.rglob("*.py")) if (hits := raw_redis(p))}
    assert not problems, ("raw Redis in the views (add a read to rushhpc/network/ and call it): "
                          + "; ".join(f"{f}: {', '.join(h)}" for f, h in problems.items()))
