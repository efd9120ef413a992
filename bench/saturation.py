"""Saturation (issue 12): one network's Redis driven to its ceiling, and nothing lost on the way.

    python bench/saturation.py                          # workers 1,2,4,8,16; Redis capped at 0.25 core
    python bench/saturation.py --quick                  # CI smoke run, under 60 s
    python bench/saturation.py --redis-cpu 0 --task-ms 0 --json /tmp/sat.json   # uncapped, no-op tasks

A private redis-server is pinned to CPU 0 (every thread, as ``taskset -a -c 0``) and, so that
the two cores of this machine's clients can saturate it, limited to ``--redis-cpu`` of a core
with a cgroup (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``; no writable cgroup: pinned only,
and the output says so). The cgroup also gets the highest CPU weight, so that clients sharing
Redis's CPU do not delay it: the cap is its only limit. The cgroup is removed at the end, also
after Ctrl-C or an error.

Per step, a fresh network and N real worker processes (`Rush.start_local_workers`, default
`rushhpc.queue_loop`; ``--loop propose``: `workloads.propose_loop`) running tasks of
``--task-ms`` (a timed sleep; 0: the no-op). For the queue loop the manager keeps the queue
topped up (`push_tasks` in chunks) during the step. Reported per step, over a window that
starts ``--warmup`` seconds after every worker has finished a task:

- tasks/s, Redis CPU (``INFO cpu`` delta / wall time, as a share of one core: it should approach
  the cap) and per task, the share of cgroup periods in which Redis was throttled, and the CPU
  the clients (this manager, the workers, their heartbeats) used, in cores;
- the overhead a task costs its worker, from Redis's own clock: per worker, the time between
  the claims (queue) or creations (propose) of consecutive tasks, minus the time the objective
  took (``t_obj`` it reports): p50 and p99. And claim -> finish (p50 / p99), objective included;
- at the end of the step (workers terminated, queue drained) the check that nothing was lost or
  duplicated: every task the step created is finished, exactly once (one record per key, in the
  finished list once, first attempt, no failed, nothing queued or running), the counts of the
  network API (`counts_by_state`, `n_finished_tasks`, `n_tasks`, `fetch_finished_tasks`) equal the
  number pushed, and `detect_lost_workers` finds no worker lost (heartbeats held up at saturation).

A check that fails is reported in the table and makes the exit code 1: this bench's "nothing is
lost" is a claim, not a timing. Load averages are in the table (the machine is shared).
Run it from a directory without a rushhpc checkout (workers start in a private temp dir anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RedisServer, log, p99, wait_for  # noqa: E402

CG_NAME = f"rushhpc-bench-sat-{os.getpid()}"


# ----------------------------------------------------------------------------- cpu cap
def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, options) of every cgroup mount."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], parts[3]))
    return out


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path in the v2 hierarchy (controller None) or in the v1 hierarchy of ``controller``."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if (controller is None and ctrls == "") or (controller is not None and controller in ctrls.split(",")):
                return path
    return "/"


class CpuCap:
    """Limit one process (all its threads) to ``fraction`` of a core with a cgroup of its own.

    Tries cgroup v2 (``cpu.max`` "quota period"), then v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
    `remove` moves the process back to the cgroup it came from and deletes the cgroup.
    ``mode`` says what was applied ("cgroup v2 ...", "cgroup v1 ...", or why there is no cap).
    """

    def __init__(self, pid: int, fraction: float, period_us: int):
        self.pid, self.fraction, self.period = pid, fraction, period_us
        self.quota = max(1000, int(round(fraction * period_us)))
        self.path: Path | None = None
        self.parent: Path | None = None
        self.version = 0
        self.enabled_subtree = False
        self.mode = "no cap requested"
        self.applied = False

    def apply(self) -> bool:
        if self.fraction <= 0:
            return False
        errors = []
        for attempt in (self._v2, self._v1):
            try:
                if attempt():
                    self.applied = True
                    return True
            except OSError as e:
                errors.append(f"{attempt.__name__[1:]}: {e}")
                self.remove()
        self.mode = "NO CAP (no writable cgroup with a cpu controller: " + ("; ".join(errors) or "none found") + \
            "); Redis is only pinned"
        return False

    def _v2(self) -> bool:
        for mnt, fstype, _ in _mounts():
            if fstype != "cgroup2":
                continue
            parent = Path(mnt + _own_cgroup(None)).resolve()
            if "cpu" not in (parent / "cgroup.controllers").read_text().split():
                continue
            if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
                (parent / "cgroup.subtree_control").write_text("+cpu")
                self.enabled_subtree = True
            self.parent, self.path, self.version = parent, parent / CG_NAME, 2
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{self.quota} {self.period}")
            (self.path / "cpu.weight").write_text("10000")  # the most: clients sharing its CPU never delay it
            (self.path / "cgroup.procs").write_text(str(self.pid))
            self.mode = f"cgroup v2 cpu.max \"{self.quota} {self.period}\", cpu.weight 10000 ({self.path})"
            return True
        return False

    def _v1(self) -> bool:
        for mnt, fstype, opts in _mounts():
            if fstype != "cgroup" or "cpu" not in opts.split(","):
                continue
            parent = Path(mnt + _own_cgroup("cpu")).resolve()
            self.parent, self.path, self.version = parent, parent / CG_NAME, 1
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(self.period))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota))
            (self.path / "cpu.shares").write_text("262144")  # the most: clients sharing its CPU never delay it
            (self.path / "cgroup.procs").write_text(str(self.pid))
            self.mode = (f"cgroup v1 cpu.cfs_quota_us={self.quota} cpu.cfs_period_us={self.period} cpu.shares=262144 "
                         f"({self.path}; "
                         "this machine's cgroup v2 has no cpu controller)")
            return True
        return False

    def stats(self) -> dict[str, float]:
        """nr_periods, nr_throttled and throttled seconds of the cgroup so far ({} without one)."""
        if not self.applied or self.path is None:
            return {}
        raw = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        throttled = float(raw.get("throttled_usec", 0)) / 1e6 if self.version == 2 else float(raw.get("throttled_time", 0)) / 1e9
        return {"periods": float(raw.get("nr_periods", 0)), "throttled": float(raw.get("nr_throttled", 0)),
                "throttled_s": throttled}

    def remove(self) -> None:
        """Move whatever is left in the cgroup back to its parent and delete the cgroup (idempotent)."""
        path, parent = self.path, self.parent
        if path is None or parent is None:
            return
        try:
            if path.exists():
                for pid in (path / "cgroup.procs").read_text().split():
                    try:
                        (parent / "cgroup.procs").write_text(pid)
                    except OSError:
                        pass  # it ended meanwhile
                for _ in range(50):
                    try:
                        path.rmdir()
                        break
                    except OSError:
                        time.sleep(0.1)
            if self.enabled_subtree:
                try:
                    (parent / "cgroup.subtree_control").write_text("-cpu")
                except OSError:
                    pass
        finally:
            self.path = None if not path.exists() else path
            if self.path is not None:
                print(f"saturation: could not remove cgroup {path}", file=sys.stderr)


def pin_threads(pid: int, cpus: set[int]) -> None:
    """``taskset -a -c CPUS -p PID``: every thread of the process."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


# ----------------------------------------------------------------------------- helpers
def redis_cpu(client) -> float:
    c = client.info("cpu")
    return float(c["used_cpu_user"]) + float(c["used_cpu_sys"])


def server_time(client) -> float:
    s, us = client.time()
    return s + us / 1e6


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    if q == 50:
        return statistics.median(xs)
    return p99(xs)


def _raise_interrupt(signum, frame):  # SIGTERM/SIGHUP: unwind like Ctrl-C, so every finally runs
    raise KeyboardInterrupt(f"signal {signum}")


# ----------------------------------------------------------------------------- one step
def clients_cpu(skip: int) -> float:
    """CPU seconds (user + system) so far of this process and its descendants (workers, heartbeats), but ``skip``."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        if proc.pid == skip:
            continue
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_step(cfg, server, cap: CpuCap, n_workers: int, p: dict) -> dict:
    import orjson
    import workloads

    import rushhpc

    rush = rushhpc.Rush(f"sat-{p['loop']}-{n_workers}-{os.getpid()}", config=cfg)
    raw = server.client
    res: dict = {"workers": n_workers, "load_start": round(os.getloadavg()[0], 2)}
    objective = workloads.timed_sleep(p["task_ms"] / 1000) if p["task_ms"] > 0 else workloads.noop
    pushed: list[str] = []
    try:
        t = time.monotonic()
        if p["loop"] == "queue":
            ids = rush.start_local_workers(rushhpc.queue_loop, n_workers=n_workers, fun=objective)
        else:
            ids = rush.start_local_workers(workloads.propose_loop, n_workers=n_workers, objective=objective)
        rush.wait_for_workers(worker_ids=ids, timeout=300)
        res["startup_s"] = round(time.monotonic() - t, 2)
        queued_key = rush.keys.queued

        def feed(until: float) -> None:
            """Keep at least 2 chunks queued until ``until`` (queue loop; the propose loop feeds itself)."""
            while True:
                if p["loop"] == "queue":
                    while raw.llen(queued_key) < 2 * p["chunk"]:
                        pushed.extend(rush.push_tasks(workloads.random_xs(p["chunk"])))
                now = time.monotonic()
                if now >= until:
                    return
                time.sleep(min(0.02, until - now))

        def every_worker_busy() -> bool:
            """True once each worker finished a task lately: all are in their loops (a started worker
            still unpickles its loop after registering; under load that takes a while)."""
            recent = orjson.loads(rush.protocol.fetch("range", "finished", -max(200, 20 * n_workers), -1))
            return len({r.get("worker_id") for r in recent}) >= n_workers

        deadline = time.monotonic() + 120
        while not every_worker_busy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every one of {n_workers} workers finished a task within 120 s")
            feed(time.monotonic() + 0.2)
        res["busy_after_s"] = round(time.monotonic() - t, 2)
        feed(time.monotonic() + p["warmup"])
        rpid = server.proc.pid
        k0 = clients_cpu(rpid)
        c0, f0, s0, st0, w0 = redis_cpu(raw), rush.n_finished_tasks, cap.stats(), server_time(raw), time.monotonic()
        feed(w0 + p["window"])
        c1, f1, s1, st1, w1 = redis_cpu(raw), rush.n_finished_tasks, cap.stats(), server_time(raw), time.monotonic()
        k1 = clients_cpu(rpid)
        wall = w1 - w0
        done = f1 - f0
        res.update(rate=done / wall, redis_cpu=(c1 - c0) / wall, cpu_per_task_us=(c1 - c0) / max(1, done) * 1e6,
                   clients_cpu=(k1 - k0) / wall, window_s=round(wall, 2), load_window=round(os.getloadavg()[0], 2))
        if s0:
            periods = s1["periods"] - s0["periods"]
            res["throttled_share"] = (s1["throttled"] - s0["throttled"]) / periods if periods else None
        # stop: the queue loop drains what is queued, then every worker is asked to terminate
        if p["loop"] == "queue":
            wait_for(lambda: rush.n_finished_tasks + rush.n_failed_tasks >= len(pushed), 300, "the queue to drain",
                     interval=0.05)
        rush.stop_workers(type="terminate")
        wait_for(lambda: rush.worker_counts()["running"] == 0, 120, "the workers to terminate", interval=0.05)

        # ---- nothing lost, nothing duplicated
        records = orjson.loads(rush.protocol.fetch("states", "queued", "running", "finished", "failed"))
        keys = [r["keys"] for r in records]
        expected = set(pushed) if p["loop"] == "queue" else set(keys)
        n = len(expected)
        counts = rush.counts_by_state()
        finished_list = rush.finished_tasks
        frame = rush.fetch_finished_tasks()
        lost_workers = rush.detect_lost_workers()
        checks = {
            "every pushed task has one record": len(keys) == len(set(keys)) == n and set(keys) == expected,
            "all finished": all(r["state"] == "finished" for r in records),
            "finished list: each key once": len(finished_list) == len(set(finished_list)) == n,
            "first attempt (claimed once)": all(int(r.get("attempt", 0)) == 1 for r in records),
            "counts_by_state": counts == {"queued": 0, "running": 0, "finished": n, "failed": 0},
            "n_finished_tasks == n_tasks == pushed": rush.n_finished_tasks == rush.n_tasks == n,
            "fetch_finished_tasks rows": len(frame) == n and frame["keys"].is_unique,
            "no worker lost": not lost_workers and not rush.lost_worker_ids,
            "every worker terminated": rush.worker_counts()["terminated"] == n_workers,
        }
        res.update(tasks=n, ok=all(checks.values()), failed_checks=[k for k, v in checks.items() if not v],
                   counts=counts, duplicates=len(finished_list) - len(set(finished_list)),
                   missing=len(expected - set(finished_list)), lost_workers=len(lost_workers))

        # ---- overhead per task, from Redis's clock, for tasks of the window
        stamp = "started_at"
        by_worker: dict[str, list[dict]] = {}
        for r in records:
            if st0 <= r.get(stamp, 0) <= st1 and r.get("worker_id"):
                by_worker.setdefault(r["worker_id"], []).append(r)
        overhead, claim_finish = [], []
        for rs in by_worker.values():
            rs.sort(key=lambda r: r[stamp])
            for a, b in zip(rs, rs[1:]):
                t_obj = (a.get("ys") or {}).get("t_obj", 0.0)
                overhead.append(b[stamp] - a[stamp] - t_obj)
            claim_finish += [r["finished_at"] - r[stamp] for r in rs if "finished_at" in r]
        res.update(overhead_p50_ms=_ms(pct(overhead, 50)), overhead_p99_ms=_ms(pct(overhead, 99)),
                   claim_finish_p50_ms=_ms(pct(claim_finish, 50)), claim_finish_p99_ms=_ms(pct(claim_finish, 99)),
                   latency_samples=len(overhead), load_end=round(os.getloadavg()[0], 2))
    finally:
        try:
            rush.stop_workers(type="kill")
            rush.reset()
        finally:
            rush.close()
    return res


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1e3


# ----------------------------------------------------------------------------- report
def table(steps: list[dict], cap_share: float | None) -> str:
    def f(x, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    head = ("| workers | tasks/s | Redis CPU (share of a core) | Redis CPU per task (us) | throttled periods "
            "| overhead per task p50 / p99 (ms) | claim (or creation) -> finish p50 / p99 (ms) | tasks checked "
            "| lost / duplicated | nothing lost or duplicated | clients' CPU (cores) | load avg (1 min) |")
    lines = [head, "|" + " ---: |" * 9 + " --- | ---: | ---: |"]
    for s in steps:
        cpu = f"{s['redis_cpu']:.2f}" + (f" ({s['redis_cpu'] / cap_share:.0%} of cap)" if cap_share else "")
        thr = f(s.get("throttled_share"), ".0%") if "throttled_share" in s else "no cgroup"
        verdict = "yes" if s["ok"] else "**NO: " + ", ".join(s["failed_checks"]) + "**"
        lines.append(
            f"| {s['workers']} | {s['rate']:,.0f} | {cpu} | {s['cpu_per_task_us']:.0f} | {thr} "
            f"| {f(s['overhead_p50_ms'], '.2f')} / {f(s['overhead_p99_ms'], '.2f')} "
            f"| {f(s['claim_finish_p50_ms'], '.2f')} / {f(s['claim_finish_p99_ms'], '.2f')} "
            f"| {s['tasks']:,} | {s['missing']} / {s['duplicates']} | {verdict} | {s['clients_cpu']:.2f} "
            f"| {s['load_start']:.2f} / {s['load_window']:.2f} / {s['load_end']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4,8,16", help="worker counts to sweep (comma-separated)")
    ap.add_argument("--loop", choices=("queue", "propose"), default="queue")
    ap.add_argument("--task-ms", type=float, default=1.0, help="task duration (a timed sleep); 0: the no-op")
    ap.add_argument("--redis-cpu", type=float, default=0.25,
                    help="cap Redis at this share of a core with a cgroup (0: no cap, pinned only)")
    ap.add_argument("--cgroup-period-us", type=int, default=10_000,
                    help="the cgroup's accounting period: Redis runs quota = share x period, then waits for the next "
                         "period (short periods keep the stalls short; 100000 is the kernel default)")
    ap.add_argument("--redis-core", type=int, default=0, help="the CPU Redis is pinned to")
    ap.add_argument("--client-cpus", default="", help="pin the workers and the manager to these CPUs (e.g. '1'); "
                                                      "default: unpinned (both cores)")
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured per step")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--chunk", type=int, default=250, help="tasks per push_tasks call of the manager")
    ap.add_argument("--quick", action="store_true", help="short run for CI (< 60 s): workers 1,4,16, 1.5 s windows")
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)
    if args.quick:
        args.workers, args.window, args.warmup = "1,4,16", 1.5, 0.7
    counts = [int(x) for x in args.workers.split(",") if x.strip()]

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="rushhpc-sat-"))
    os.environ["RUSHHPC_RUN_DIR"] = str(work / "run")
    bench_cpus = os.sched_getaffinity(0)
    server = cap = None
    steps: list[dict] = []
    t_start = time.monotonic()
    try:
        import workloads

        import rushhpc

        workloads.rushhpc_loops()
        os.chdir(work)  # local workers start in the manager's directory: not in a rushhpc checkout
        server = RedisServer(work)
        pin_threads(server.proc.pid, {args.redis_core})
        cap = CpuCap(server.proc.pid, args.redis_cpu, args.cgroup_period_us)
        cap.apply()
        if args.client_cpus:
            os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})  # the workers inherit it
        cfg = rushhpc.redis_config(host="127.0.0.1", port=server.port)
        log(f"saturation: redis-server {server.version} pid {server.proc.pid} on CPU {args.redis_core}; {cap.mode}")
        params = {"loop": args.loop, "task_ms": args.task_ms, "window": args.window, "warmup": args.warmup,
                  "chunk": args.chunk}
        for n in counts:
            log(f"saturation: {n} worker(s), load {os.getloadavg()[0]:.2f}")
            server.flushall()
            steps.append(run_step(cfg, server, cap, n, params))
            s = steps[-1]
            log(f"saturation: {n} worker(s): {s['rate']:,.0f} tasks/s, Redis {s['redis_cpu']:.2f} core, "
                f"nothing lost: {s['ok']}")
    finally:
        os.sched_setaffinity(0, bench_cpus)
        if server is not None:
            server.stop()
        if cap is not None:
            cap.remove()
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)

    cap_share = args.redis_cpu if cap is not None and cap.applied else None
    task = f"{args.task_ms:g} ms sleep" if args.task_ms > 0 else "no-op"
    print(f"redis-server {server.version if server else '?'} pinned to CPU {args.redis_core}; cap: {cap.mode if cap else '?'}; "
          f"{args.loop} loop, tasks: {task}; workers {'pinned to CPUs ' + args.client_cpus if args.client_cpus else 'unpinned'}; "
          f"{args.window:g} s windows after {args.warmup:g} s warm-up; {os.cpu_count()} CPUs; "
          f"run time {time.monotonic() - t_start:.0f} s")
    print()
    print(table(steps, cap_share))
    plateau = [s for s in steps if cap_share and s["redis_cpu"] >= 0.9 * cap_share]
    if plateau:
        lo, hi = plateau[0], plateau[-1]
        print(f"\nat the cap (steps with Redis at >= 90 % of it: {', '.join(str(s['workers']) for s in plateau)} workers), "
              f"tasks/s = {cap_share:g} core / Redis CPU per task: {lo['cpu_per_task_us']:.0f} us with {lo['workers']} "
              f"-> {hi['cpu_per_task_us']:.0f} us with {hi['workers']} workers, i.e. "
              f"{cap_share / lo['cpu_per_task_us'] * 1e6:,.0f} -> {cap_share / hi['cpu_per_task_us'] * 1e6:,.0f} tasks/s")
    print("\noverhead per task: per worker, time between the claims (queue loop) or creations (propose loop) of "
          "consecutive tasks on Redis's clock, minus the objective's own time; claim -> finish includes the objective. "
          "load avg: at the step's start / end of its window / end of its checks.")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "redis_version": server.version if server else None, "cap": cap.mode if cap else None, "cap_share": cap_share,
            "params": vars(args), "cpus": os.cpu_count(), "steps": steps}, indent=2) + "\n")
    return 0 if steps and all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: everything started was stopped on the way out
        print(f"interrupted ({e or 'Ctrl-C'}); stopped what this run started", file=sys.stderr)
        sys.exit(130)
