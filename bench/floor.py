"""The floor: what one Redis round trip costs on this machine, right now.

Every other number of the run is read against it. Rows:

- ``PING, redis-py, dedicated connection``: the floor (``ctx.floor_us``). A
  worker talks to Redis over one dedicated connection, so a worker operation
  that costs N of these is "N round trips".
- ``PING, redis-py, connection pool``: the manager's connection type
  (``ctx.floor_pool_us``); its ratio to the floor is the pool's per-command cost.
- ``PING, raw socket``: the same PING written and read with a bare socket, no
  client library: what the network stack and Redis alone cost.
- ``PING, C client (redis-benchmark)``: redis-benchmark, 1 connection, no
  pipelining (its p50 is printed in steps of 8 us).
"""

from __future__ import annotations

import shutil
import socket
import subprocess

from common import Context, Row, interleaved, median, p99, ping_samples, us


def raw_socket_ping(port: int, n: int) -> list[float]:
    """PING over a bare TCP socket (TCP_NODELAY, like redis-py); seconds each."""
    import time

    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            if s.recv(64) != b"+PONG\r\n":
                raise RuntimeError("unexpected PING reply")
            out.append(time.perf_counter() - t)
    finally:
        s.close()
    return out


def c_client_ping_us(port: int, n: int) -> float | None:
    """Median PING latency of redis-benchmark (C, 1 connection), in us; None if not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-n", str(n), "-t", "ping", "--csv"],
        capture_output=True, text=True, timeout=60,
    ).stdout
    for line in out.splitlines():
        if line.startswith('"PING_MBULK"'):
            fields = [f.strip('"') for f in line.split(",")]
            return float(fields[4]) * 1000  # p50_latency_ms
    return None


def run(ctx: Context) -> list[Row]:
    n = ctx.pick(20_000, 5_000)
    single = ctx.single_client()
    pool = ctx.pool_client()
    # warm both connections, then alternate blocks so both see the same load
    ping_samples(single, 500)
    ping_samples(pool, 500)
    pool_s, single_s = interleaved(pool.ping, single.ping, n, rounds=10)
    single.close()
    pool.close()
    raw = raw_socket_ping(ctx.server.port, n // 2)
    c_us = c_client_ping_us(ctx.server.port, n)

    ctx.floor_us = us(median(single_s))
    ctx.floor_pool_us = us(median(pool_s))
    rows = [
        Row("floor", "PING, redis-py, dedicated connection (the floor)", ctx.floor_us, "us",
            us(p99(single_s)), 1.0, "floor", note=f"n={len(single_s)}"),
        Row("floor", "PING, redis-py, connection pool", ctx.floor_pool_us, "us",
            us(p99(pool_s)), round(ctx.floor_pool_us / ctx.floor_us, 2), "floor",
            note=f"the pool costs {round(ctx.floor_pool_us - ctx.floor_us, 1)} us per command"),
        Row("floor", "PING, raw socket (no client library)", us(median(raw)), "us",
            us(p99(raw)), round(us(median(raw)) / ctx.floor_us, 2), "floor"),
    ]
    if c_us is not None:
        rows.append(Row("floor", "PING, C client (redis-benchmark, 1 connection)", round(c_us, 1), "us",
                        None, round(c_us / ctx.floor_us, 2), "floor", note="p50; redis-benchmark prints 8 us steps"))
    else:
        rows.append(Row("floor", "PING, C client (redis-benchmark)", None, "us", note="redis-benchmark not installed"))
    return rows
