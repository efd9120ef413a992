"""Many workers on one network (issue 12): what 1,000 registered workers and 500 live connections cost Redis
and the manager.

    python bench/many_workers.py                         # --workers 1000 --connections 500
    python bench/many_workers.py --quick                 # CI smoke run, under 60 s, same scale
    python bench/many_workers.py --heartbeat-period 2 --json /tmp/many.json

The workers are simulated, not started: one child process (the "fleet", asyncio with
``redis.asyncio``) opens ``--connections`` connections and registers ``--workers`` workers over
them (worker i on connection i mod C) with the script real workers use
(`rushhpc.store.protocol.Protocol.register_worker`, the fields `RushWorker.__init__` writes). Each
connection then behaves as the heartbeat process of its workers: every ``--heartbeat-period`` it
runs the heartbeat script (`Protocol.heartbeat`) for each of them and blocks in ``BLPOP`` on their
kill lists for one period, as `rushhpc.worker.heartbeat` does. The KEYS and ARGV of both scripts are
taken from `Protocol` itself (a recording stand-in client), so they cannot drift from the real ones.

Measured, against a private redis-server pinned to CPU 0 and started with a small ``--maxclients``:

- Redis CPU (``INFO cpu``) of the idle connections, of a registration, per heartbeat;
- time (p50 / p99), round trips and Redis CPU per call of the manager's views at that scale:
  `worker_info`, `worker_rows`, `detect_lost_workers` with none lost and with ``--lost`` lost
  (the fleet stops beating them after a last beat with a 1 s expiry, so their heartbeat keys
  expire within a second instead of after 60 s), `counts_by_state`, `worker_counts`,
  `fetch_queued_tasks`, the log stream (`read_log` of a full stream written through
  `rushhpc.network.logs.RedisLogHandler`, and `print_log` with one new record), and the command-line views
  run in-process (``rushhpc networks``, ``workers``, ``tasks``, ``logs``, ``top --once``);
- that `Rush.check_client_capacity` refuses a launch that would exceed ``maxclients``, with its
  message, and that `start_local_workers` is refused before any worker starts; the redis-server's
  open-file limit and its maxclients.

Redis CPU per call = (INFO cpu delta - the heartbeat-phase rate x the time the calls took) / calls;
the heartbeats go on meanwhile (as they would). The load average is in every row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import io
import json
import logging
import os
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RedisServer, count_round_trips, log, p99, stop_process, wait_for  # noqa: E402


# ----------------------------------------------------------------------------- the calls, from Protocol itself
class _Recorded:
    def __init__(self, rec: _Recorder, source: str):
        self.rec, self.script = rec, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys=(), args=(), client=None):
        self.rec.calls.append((self, list(keys), [str(a) for a in args]))
        return "running"


class _Recorder:
    """Stands in for a Redis client: `Protocol` registers its scripts here and each call is recorded,
    (script, KEYS, ARGV), to be sent over an asyncio connection."""

    def __init__(self) -> None:
        self.calls: list[tuple[_Recorded, list[str], list[str]]] = []

    def register_script(self, source: str) -> _Recorded:
        return _Recorded(self, source)

    def last(self) -> tuple[_Recorded, list[str], list[str]]:
        return self.calls.pop()


def worker_fields(pid: int) -> dict[str, str]:
    """What `RushWorker.__init__` registers for a worker outside a batch job, with a heartbeat."""
    return {"pid": str(pid), "hostname": socket.gethostname(), "launcher": "manual", "heartbeat_pid": str(pid)}


# ----------------------------------------------------------------------------- the fleet (child process)
async def fleet(port: int, p: dict) -> None:
    import redis.asyncio as aredis

    from rushhpc.store.keys import Keys
    from rushhpc.store.protocol import Protocol

    keys = Keys(p["network"])
    rec = _Recorder()
    proto = Protocol(rec, keys)
    n_conn, n_workers = p["connections"], p["workers"]
    period, expire = p["period"], max(1, round(p["expire"]))
    wids = [f"sim-{i:05d}" for i in range(n_workers)]
    mine: list[list[str]] = [wids[c::n_conn] for c in range(n_conn)]
    dropped: set[str] = set()
    locks = {w: asyncio.Lock() for w in wids}
    beats = [0]
    kills = [0]
    errors: list[str] = []
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(**kw) -> None:
        print(json.dumps(kw), flush=True)

    t = time.monotonic()
    def connection():
        # the socket timeout above the blocking timeout, so BLPOP is never cut short (as rushhpc.worker.heartbeat)
        return aredis.Redis(host="127.0.0.1", port=port, single_connection_client=True, decode_responses=True,
                            socket_timeout=period + 10)

    conns = [connection() for _ in range(n_conn)]
    await asyncio.gather(*(c.ping() for c in conns))
    control = connection()
    say(event="connected", n=n_conn, s=time.monotonic() - t)

    proto.heartbeat(wids[0], expire)
    hb_script = rec.last()[0]
    proto.register_worker(wids[0], expire, worker_fields(os.getpid()))
    reg_script = rec.last()[0]
    for s in (hb_script, reg_script):
        await control.script_load(s.script)

    async def evalsha(conn, call) -> object:
        script, ks, args = call
        return await conn.evalsha(script.sha, len(ks), *ks, *args)

    async def register(c: int) -> None:
        for w in mine[c]:
            proto.register_worker(w, expire, worker_fields(os.getpid()))
            await evalsha(conns[c], rec.last())

    async def beat(conn, w: str, ex: int) -> None:
        proto.heartbeat(w, ex)
        await evalsha(conn, rec.last())

    async def heartbeat_loop(c: int) -> None:
        conn = conns[c]
        kill_keys = [keys.kill(w) for w in mine[c]]
        await asyncio.sleep(random.uniform(0, period))  # spread the beats over the period
        while True:
            try:
                for w in mine[c]:
                    async with locks[w]:
                        if w in dropped:
                            continue
                        await beat(conn, w, expire)
                        beats[0] += 1
                got = await conn.blpop(kill_keys, timeout=period)
            except Exception as e:  # noqa: BLE001 - counted and reported: the bench fails on any
                errors.append(f"connection {c}: {type(e).__name__}: {e}")
                await asyncio.sleep(1)
                continue
            if got is not None:  # a kill request: a real heartbeat kills its worker; this one stops beating it
                kills[0] += 1
                dropped.add(got[0].rsplit(":", 1)[1])

    beating: list[asyncio.Task] = []
    while True:
        line = await reader.readline()
        if not line:
            break  # the parent is gone
        cmd = json.loads(line)
        if cmd["cmd"] == "register":
            t = time.monotonic()
            await asyncio.gather(*(register(c) for c in range(n_conn)))
            say(event="registered", n=n_workers, s=time.monotonic() - t)
        elif cmd["cmd"] == "beat":
            beating = [asyncio.create_task(heartbeat_loop(c)) for c in range(n_conn)]
            say(event="beating")
        elif cmd["cmd"] == "drop":
            for w in cmd["workers"]:
                dropped.add(w)
            for w in cmd["workers"]:
                async with locks[w]:  # no beat of it in flight: this last one, 1 s expiry, is its last
                    await beat(control, w, 1)
            say(event="dropped", n=len(cmd["workers"]))
        elif cmd["cmd"] == "stats":
            say(event="stats", beats=beats[0], kills=kills[0], errors=len(errors), first_errors=errors[:3])
        elif cmd["cmd"] == "stop":
            break
    for task in beating:
        task.cancel()
    # bounded: a connection cancelled inside BLPOP can make redis-py's close wait on its lock; the
    # parent kills this process group if "stopped" does not come, but the answer should come first
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*beating, return_exceptions=True), 5)

    async def close(conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.aclose(), 2)

    await asyncio.gather(*(close(c) for c in [*conns, control]))
    say(event="stopped", errors=len(errors))


class Fleet:
    """The fleet child process, driven by one JSON command per line.

    Every wait on the child has a deadline: a fleet that stops answering (a stuck event loop, a
    connection close that never returns) ends the run with an error naming the step, never a hang.
    """

    def __init__(self, port: int, params: dict, workdir: Path):
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--fleet", str(port), json.dumps(params)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(workdir / "fleet.err", "wb"),
            cwd=workdir, start_new_session=True,
        )
        self.err = workdir / "fleet.err"
        self._buffer = b""

    def _line(self, deadline: float, event: str) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the fleet process did not answer {event!r} in time: {self.err.read_text()[-2000:]}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the fleet process ended ({self.proc.poll()}): {self.err.read_text()[-2000:]}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def read(self, event: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._line(deadline, event))
            if msg.get("event") == event:
                return msg

    def ask(self, event: str, timeout: float = 120, **cmd) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self.read(event, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("stopped", timeout=20, cmd="stop")
                self.proc.wait(10)
            except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired, ValueError) as e:
                print(f"many_workers: the fleet did not stop cleanly ({type(e).__name__}); killing its process group",
                      file=sys.stderr)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session (start_new_session)
        stop_process(self.proc)


# ----------------------------------------------------------------------------- measuring
def redis_cpu(client) -> float:
    c = client.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft} (hard {hard})"
    return "?"


class Meter:
    """Rows of the table: each a call timed ``n`` times, its round trips and its Redis CPU per call."""

    def __init__(self, client, base_rate: float = 0.0):
        self.client = client
        self.base_rate = base_rate  # Redis CPU (s/s) of what goes on meanwhile (the heartbeats)
        self.rows: list[dict] = []

    def call(self, name: str, fn, n: int, warm: bool = True, note: str = "") -> dict:
        if warm:
            fn()  # a first call may load a script or import a module
        times = []
        c0, t0 = redis_cpu(self.client), time.monotonic()
        with count_round_trips() as trips:
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        c1, t1 = redis_cpu(self.client), time.monotonic()
        cpu = max(0.0, (c1 - c0) - self.base_rate * (t1 - t0)) / n
        return self.add(name, n=n, p50_ms=statistics.median(times) * 1e3, p99_ms=p99(times) * 1e3,
                        round_trips=trips.count / n, redis_cpu_us=cpu * 1e6, note=note)

    def add(self, name: str, **values) -> dict:
        row = {"name": name, **values, "load": round(os.getloadavg()[0], 2)}
        self.rows.append(row)
        log(f"many_workers: {name}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in values.items() if k != "note"))
        return row


def cli(*argv: str) -> None:
    """A ``rushhpc`` command in this process, its output thrown away."""
    from rushhpc.ui.cli import main as rushhpc_main

    with contextlib.redirect_stdout(io.StringIO()):
        code = rushhpc_main(list(argv))
    if code != 0:
        raise RuntimeError(f"rushhpc {' '.join(argv)} exited {code}")


def run(args: argparse.Namespace, work: Path) -> dict:
    import redis

    import rushhpc
    from rushhpc.errors import RushConfigError
    from rushhpc.network.logs import RedisLogHandler
    from rushhpc.network.workers import WORKER_FIELDS

    out: dict = {"params": {k: v for k, v in vars(args).items() if k not in ("fleet", "json")}}
    server = fleet = rush = None
    try:
        server = RedisServer(work, extra_conf=(f"maxclients {args.maxclients}",))
        for tid in os.listdir(f"/proc/{server.proc.pid}/task"):
            os.sched_setaffinity(int(tid), {0})  # as taskset -a -c 0
        raw = server.client
        info = raw.info("clients")
        out["redis"] = {"version": server.version, "pid": server.proc.pid, "fd_limit": fd_limit(server.proc.pid),
                        "maxclients": int(info["maxclients"]), "maxclients_asked": args.maxclients}
        cfg = rushhpc.redis_config(host="127.0.0.1", port=server.port)
        net = f"many-{os.getpid()}"
        rush = rushhpc.Rush(net, config=cfg)
        url = f"redis://127.0.0.1:{server.port}"
        m = Meter(raw)
        n_calls = args.calls

        # ---- connections, idle
        c_before = int(raw.info("clients")["connected_clients"])
        mem0 = raw.info("memory")
        fleet = Fleet(server.port, {"network": net, "connections": args.connections, "workers": args.workers,
                                    "period": args.heartbeat_period, "expire": args.heartbeat_expire}, work)
        hello = fleet.read("connected")
        connected = int(raw.info("clients")["connected_clients"])
        mem1 = raw.info("memory")
        c0, t0 = redis_cpu(raw), time.monotonic()
        time.sleep(args.window)
        idle_rate = (redis_cpu(raw) - c0) / (time.monotonic() - t0)
        m.add(f"{args.connections} connections open, idle", n=args.connections, redis_cpu_share=idle_rate,
              connect_s=hello["s"], memory_per_connection_kib=(int(mem1["mem_clients_normal"]) -
                                                               int(mem0["mem_clients_normal"])) / 1024 / args.connections,
              note=f"connected_clients {c_before} -> {connected}; Redis CPU as a share of one core")

        # ---- registration: the whole fleet at once
        c0 = redis_cpu(raw)
        reg = fleet.ask("registered", cmd="register")
        m.base_rate = idle_rate
        cpu = redis_cpu(raw) - c0 - idle_rate * reg["s"]
        m.add(f"register_worker.lua: {args.workers:,} workers over {args.connections} connections at once",
              n=args.workers, wall_s=reg["s"], per_worker_ms=reg["s"] / args.workers * 1e3,
              redis_cpu_us=cpu / args.workers * 1e6, note="wall time of the whole registration; CPU per registration")
        assert rush.n_running_workers == args.workers, rush.n_running_workers

        # ---- heartbeats
        fleet.ask("beating", cmd="beat")
        time.sleep(min(2.0, args.window / 2))
        cs0 = raw.info("commandstats")
        b0, c0, t0 = fleet.ask("stats", cmd="stats")["beats"], redis_cpu(raw), time.monotonic()
        time.sleep(args.window)
        b1, c1, t1 = fleet.ask("stats", cmd="stats")["beats"], redis_cpu(raw), time.monotonic()
        cs1 = raw.info("commandstats")
        beats = b1 - b0
        hb_rate = (c1 - c0) / (t1 - t0)

        def calls(cmd: str, field: str = "calls") -> int:
            return int(cs1.get(f"cmdstat_{cmd}", {}).get(field, 0)) - int(cs0.get(f"cmdstat_{cmd}", {}).get(field, 0))

        def usec_per_call(cmd: str) -> float:
            return calls(cmd, "usec") / max(1, calls(cmd))

        m.add(f"heartbeats: {args.workers:,} workers, period {args.heartbeat_period:g} s", n=beats,
              beats_per_s=beats / (t1 - t0), redis_cpu_share=hb_rate,
              redis_cpu_us=(hb_rate - idle_rate) * (t1 - t0) / max(1, beats) * 1e6,
              note=f"per beat: the beat script and its share of the BLPOP on the kill lists "
                   f"({calls('evalsha')} EVALSHA, {calls('blpop')} BLPOP in the window; commandstats: "
                   f"{usec_per_call('evalsha'):.0f} us per EVALSHA, {usec_per_call('blpop'):.0f} us per BLPOP; the rest "
                   "is I/O and the BLPOP timeouts); idle CPU subtracted")
        m.base_rate = hb_rate
        wid0 = "sim-00000"
        m.call("one heartbeat call (Protocol.heartbeat), from the manager", lambda: rush.protocol.heartbeat(wid0, 60),
               n_calls * 4)

        # ---- the manager's views
        assert len(rush.worker_rows()) == args.workers
        m.call("worker_info (DataFrame)", lambda: rush.worker_info, n_calls)
        m.call("worker_rows()", rush.worker_rows, n_calls)
        m.call("Protocol.worker_info() (the pipelined read and its replies alone)",
               lambda: rush.protocol.worker_info(WORKER_FIELDS), n_calls)
        m.call("detect_lost_workers(), none lost", rush.detect_lost_workers, n_calls)
        assert not rush.lost_worker_ids
        m.call("counts_by_state() (counts.lua)", rush.counts_by_state, n_calls * 2)
        m.call("worker_counts()", rush.worker_counts, n_calls * 2)
        m.call("fetch_queued_tasks(), empty queue", rush.fetch_queued_tasks, n_calls)
        cli_before = int(raw.info("clients")["connected_clients"])
        m.call("rushhpc networks --json (in-process)", lambda: cli("networks", "--redis", url, "--json"), n_calls)
        m.call("rushhpc workers --json (in-process)", lambda: cli("workers", net, "--redis", url, "--json"), n_calls)
        m.call("rushhpc tasks --json (in-process)", lambda: cli("tasks", net, "--redis", url, "--json"), n_calls)
        m.call("rushhpc top --once (in-process)", lambda: cli("top", net, "--redis", url, "--once"), max(3, n_calls // 2))

        # ---- the log stream
        logger = logging.getLogger("bench.many_workers")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = RedisLogHandler(rush.connector, rush.keys.log, wid0)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        i = [0]

        def emit() -> None:
            i[0] += 1
            logger.info("task %d of worker %s: y=%.6f", i[0], wid0, random.random())

        m.call(f"one log record (RedisLogHandler: XADD, MAXLEN ~ {handler.maxlen:,})", emit, args.log_records, warm=False)
        length = int(raw.xlen(rush.keys.log))
        m.call(f"read_log(), {length:,} records", rush.read_log, max(3, n_calls // 2))
        with contextlib.redirect_stdout(io.StringIO()):
            rush.print_log()  # from the start: what follows is incremental

            def one_new() -> None:
                emit()
                rush.print_log()

            m.call(f"print_log() with 1 new record ({length:,} in the stream; the emit included)", one_new, n_calls)
        m.call(f"rushhpc logs --json (in-process), {length:,} records", lambda: cli("logs", net, "--redis", url, "--json"),
               max(3, n_calls // 5))
        logger.removeHandler(handler)

        gc.collect()
        out["cli_connections_left"] = int(raw.info("clients")["connected_clients"]) - cli_before
        # ---- lost workers: heartbeats stop, their keys expire
        logging.getLogger("rushhpc").setLevel(logging.ERROR)  # not 100 warnings "worker ... lost" on stderr
        alive = [f"sim-{i:05d}" for i in range(1, args.workers)]
        random.shuffle(alive)
        found = []
        for r in range(args.lost_rounds):
            group = sorted(alive[r * args.lost : (r + 1) * args.lost])
            fleet.ask("dropped", cmd="drop", workers=group)
            hb = [rush.keys.heartbeat(w) for w in group]
            wait_for(lambda hb=hb: raw.exists(*hb) == 0, 30, "the dropped workers' heartbeat keys to expire", 0.05)
            running = rush.n_running_workers
            row = m.call(f"detect_lost_workers(), {len(group)} lost of {running:,} running", rush.detect_lost_workers, 1,
                         warm=False)
            lost_now = set(rush.lost_worker_ids) - set(found)
            row["ok"] = lost_now == set(group)
            found += sorted(lost_now)
        m.call(f"detect_lost_workers(), none lost ({rush.n_running_workers:,} running, {len(found)} lost)",
               rush.detect_lost_workers, n_calls)

        # ---- a registration at this scale, one at a time from the manager
        extra = iter(range(10**6))

        def register_one() -> None:
            rush.protocol.register_worker(f"extra-{next(extra):05d}", max(1, round(args.heartbeat_expire)),
                                          worker_fields(os.getpid()))

        m.call(f"one registration (Protocol.register_worker), {rush.n_workers:,} registered", register_one, n_calls)

        # ---- connections: the launch that does not fit
        clients = raw.info("clients")
        maxc, conn_now = int(clients["maxclients"]), int(clients["connected_clients"])
        cap: dict = {"maxclients": maxc, "connected": conn_now, "fd_limit": out["redis"]["fd_limit"]}
        small = max(1, (maxc - conn_now) // 3 // 2)
        cap["fits"] = {"n_workers": small, "left": rush.check_client_capacity(small)}
        try:
            rush.check_client_capacity(args.workers)
            cap["refused"] = None
        except RushConfigError as e:
            cap["refused"] = str(e)
            before = (set(rush.records()), rush.n_workers, list(raw.scan_iter(match=rush.keys.start("*"))))
            try:
                rush.start_local_workers(rushhpc.queue_loop, n_workers=args.workers, fun=None)
                cap["start_local_workers"] = "NOT refused"
            except RushConfigError as e2:
                after = (set(rush.records()), rush.n_workers, list(raw.scan_iter(match=rush.keys.start("*"))))
                cap["start_local_workers"] = "refused: " + str(e2).split(":")[0]
                cap["nothing_started"] = before == after
        out["capacity"] = cap
        out["fleet"] = fleet.ask("stats", cmd="stats")
        out["rows"] = m.rows
        out["lost_ok"] = all(r.get("ok", True) for r in m.rows)
        out["memory"] = {k: raw.info("memory")[k] for k in ("used_memory_human", "mem_clients_normal")}
        out["connected_end"] = int(raw.info("clients")["connected_clients"])
    except redis.RedisError:
        if fleet is not None:
            print(fleet.err.read_text()[-2000:], file=sys.stderr)
        raise
    finally:
        try:
            if fleet is not None:
                fleet.stop()
            if rush is not None:
                rush.reset()
                rush.close()
        finally:
            if server is not None:
                server.stop()
    return out


# ----------------------------------------------------------------------------- report
def report(out: dict, args: argparse.Namespace, run_s: float) -> str:
    r = out["redis"]

    def f(x, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    lines = [
        f"redis-server {r['version']} pinned to CPU 0; open-file limit {r['fd_limit']}; maxclients {r['maxclients']} "
        f"(asked {r['maxclients_asked']}); {args.workers:,} simulated workers over {args.connections} connections, "
        f"heartbeat period {args.heartbeat_period:g} s, expire {args.heartbeat_expire:g} s; {os.cpu_count()} CPUs; "
        f"run time {run_s:.0f} s; Redis memory at the end {out['memory']['used_memory_human']} "
        f"(clients {int(out['memory']['mem_clients_normal']) / 2**20:.1f} MiB)",
        "",
        "| measurement | calls | p50 (ms) | p99 (ms) | round trips / call | Redis CPU / call (us) | other | load avg (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in out["rows"]:
        other = []
        for k, label, fmt in (("redis_cpu_share", "Redis CPU {} of a core", ".2%"), ("beats_per_s", "{} beats/s", ".0f"),
                              ("wall_s", "whole registration {} s", ".3f"), ("per_worker_ms", "{} ms per worker", ".3f"),
                              ("memory_per_connection_kib", "{} KiB of Redis memory per connection", ".1f")):
            if k in row:
                other.append(label.format(format(row[k], fmt)))
        if "ok" in row:
            other.append("exactly the dropped workers found lost" if row["ok"] else "**NOT the dropped workers**")
        if row.get("note"):
            other.append(row["note"])
        lines.append(f"| {row['name']} | {row['n']:,} | {f(row.get('p50_ms'), '.3f')} | {f(row.get('p99_ms'), '.3f')} "
                     f"| {f(row.get('round_trips'), '.3g')} | {f(row.get('redis_cpu_us'), ',.0f')} | {'; '.join(other)} "
                     f"| {row['load']:.2f} |")
    cap = out["capacity"]
    lines += ["", f"Redis connections the in-process CLI calls left open: {out['cli_connections_left']}", "",
              f"check_client_capacity with {cap['connected']} clients connected, maxclients {cap['maxclients']}, "
                  f"open-file limit {cap['fd_limit']}:",
              f"- {cap['fits']['n_workers']} workers: accepted, {cap['fits']['left']} connections left",
              f"- {args.workers:,} workers: " + (f"refused: \"{cap['refused']}\"" if cap["refused"] else "**accepted**")]
    fl = out["fleet"]
    lines.append(f"- fleet: {fl['beats']:,} heartbeats sent, {fl['errors']} connection errors"
                 + (f" (**{'; '.join(fl['first_errors'])}**)" if fl["errors"] else ""))
    if "start_local_workers" in cap:
        lines.append(f"- start_local_workers(queue_loop, n_workers={args.workers}): {cap['start_local_workers']}; "
                     f"nothing started or left behind (records, workers, start keys): {cap.get('nothing_started')}")
    return "\n".join(lines)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--heartbeat-period", type=float, default=10.0, help="seconds (rushhpc's default: 10)")
    ap.add_argument("--heartbeat-expire", type=float, default=60.0, help="seconds (rushhpc's default: 60)")
    ap.add_argument("--lost", type=int, default=100, help="workers made lost per detect_lost_workers round")
    ap.add_argument("--lost-rounds", type=int, default=3)
    ap.add_argument("--maxclients", type=int, default=1000,
                    help="the bench Redis's maxclients: small, so that a launch of --workers is refused")
    ap.add_argument("--calls", type=int, default=30, help="calls timed per view (some rows use a multiple)")
    ap.add_argument("--log-records", type=int, default=10_000, help="log records written before reading the stream")
    ap.add_argument("--window", type=float, default=10.0, help="seconds of the idle and heartbeat windows")
    ap.add_argument("--quick", action="store_true", help="CI smoke run (< 60 s): same scale, fewer calls, 3 s windows")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--fleet", nargs=2, metavar=("PORT", "PARAMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fleet:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
        asyncio.run(fleet(int(args.fleet[0]), json.loads(args.fleet[1])))
        return 0
    if args.quick:
        args.calls, args.window, args.lost_rounds, args.log_records = 8, 3.0, 1, 2000
    if args.lost * args.lost_rounds >= args.workers:
        ap.error("--lost x --lost-rounds must be below --workers")
    if args.maxclients < args.connections + 50:
        ap.error("--maxclients must leave room for the bench's own clients: at least --connections + 50")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="rushhpc-many-"))
    os.environ["RUSHHPC_RUN_DIR"] = str(work / "run")
    t = time.monotonic()
    try:
        out = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(out, args, time.monotonic() - t))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    cap = out["capacity"]
    ok = (out["lost_ok"] and cap["refused"] is not None and cap.get("nothing_started", False)
          and out["fleet"]["errors"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: everything started was stopped on the way out
        print(f"interrupted ({e or 'Ctrl-C'}); stopped what this run started", file=sys.stderr)
        sys.exit(130)
