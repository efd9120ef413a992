"""The floor: what one Redis round trip costs on this machine, right now.

Every other number of the run is read against it. Redis is pinned to one CPU
and the client to another ("cross-core"), the placement of a busy worker (see
`common.placement`). Rows:

- ``PING, redis-py, dedicated connection, cross-core``: THE floor
  (``ctx.floor_us``). A worker talks to Redis over one dedicated connection, so
  a worker operation that costs N of these is "N round trips".
- ``PING, redis-py, connection pool, cross-core``: the manager's connection
  type (``ctx.floor_pool_us``); its ratio is the pool's per-command cost.
- ``PING, redis-py, dedicated, same core``: client and Redis on one CPU: no
  cross-CPU wake-up, the smallest round trip this machine has.
- ``PING, redis-py, dedicated, unpinned``: where the scheduler puts them; a
  mixture of the two above (hence drifting absolute times).
- ``PING after 10 ms idle``: the first PING after the client slept 10 ms, as a
  worker's first call after a 10 ms objective; on this kind of machine an idle
  CPU wakes up slowly, so it costs several warm round trips (it bounds the
  utilisation family).
- ``PING, raw socket``: the same PING with a bare socket, no client library.
- ``PING, C client (redis-benchmark)``: 1 connection, no pipelining, cross-core
  (its p50 is printed in steps of 8 us).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from common import Context, Row, interleaved, median, p99, ping_samples, placement, us


def raw_socket_ping(port: int, n: int) -> list[float]:
    """PING over a bare TCP socket (TCP_NODELAY, like redis-py); seconds each."""
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


def ping_after_idle(client, n: int, idle: float = 0.01) -> list[float]:
    """The first PING after sleeping ``idle`` seconds, ``n`` times; seconds each."""
    out = []
    for _ in range(n):
        time.sleep(idle)
        t = time.perf_counter()
        client.ping()
        out.append(time.perf_counter() - t)
    return out


def c_client_ping_us(port: int, n: int) -> float | None:
    """Median PING latency of redis-benchmark (C, 1 connection), in us; None if not installed.
    It inherits this process's CPU placement."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-n", str(n), "-t", "ping", "--csv"],
        capture_output=True, text=True, timeout=60, check=False,
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
    ping_samples(single, 500)
    ping_samples(pool, 500)
    with placement(ctx.server, "cross"):
        paired = interleaved(pool.ping, single.ping, n)
        raw = raw_socket_ping(ctx.server.port, n // 2)
        cold = ping_after_idle(single, ctx.pick(200, 50))
        c_us = c_client_ping_us(ctx.server.port, n)
    with placement(ctx.server, "same"):
        same = ping_samples(single, n // 2)
    unpinned = ping_samples(single, n // 2)
    single.close()
    pool.close()

    pool_s, single_s = paired.op, paired.floor
    ctx.floor_us = us(median(single_s))
    ctx.floor_pool_us = us(median(pool_s))
    f = ctx.floor_us

    def row(name: str, samples: list[float], note: str = "") -> Row:
        return Row("floor", name, us(median(samples)), "us", us(p99(samples)), round(us(median(samples)) / f, 2),
                   "floor", note=note)

    rows = [
        Row("floor", "PING, redis-py, dedicated connection, cross-core (THE floor)", f, "us", us(p99(single_s)),
            1.0, "floor", note=f"n={len(single_s)}; Redis on one CPU, client on the other"),
        Row("floor", "PING, redis-py, connection pool, cross-core (the manager's floor)", ctx.floor_pool_us, "us",
            us(p99(pool_s)), paired.ratio, "floor",
            note=f"the pool path costs {round(ctx.floor_pool_us - f, 1)} us per command"),
        row("PING, redis-py, dedicated connection, same core", same,
            "client and Redis on one CPU: no cross-CPU wake-up"),
        row("PING, redis-py, dedicated connection, unpinned", unpinned,
            "the OS moves processes: a mixture of same-core and cross-core"),
        row("PING after 10 ms idle, redis-py, dedicated connection, cross-core", cold,
            "a worker's first call after a 10 ms objective: idle CPUs wake up slowly"),
        row("PING, raw socket (no client library), cross-core", raw, "what redis-py itself adds is the difference"),
    ]
    if c_us is not None:
        rows.append(Row("floor", "PING, C client (redis-benchmark, 1 connection), cross-core", round(c_us, 1), "us",
                        None, round(c_us / f, 2), "floor", note="p50; redis-benchmark prints 8 us steps"))
    else:
        rows.append(Row("floor", "PING, C client (redis-benchmark)", None, "us", note="redis-benchmark not installed"))
    if os.cpu_count() and os.cpu_count() < 2:
        for r in rows:
            r.note += " (one CPU: nothing pinned)"
    return rows
