"""What users would use instead, side by side on the same Redis: no-op throughput.

Every peer runs the same no-op objective on 2 worker processes, against the
same redis-server (emptied before each). The family runs in rounds (3, quick
mode 1): each round measures rushhpc's two loops with 2 workers, then every
peer, so each peer is compared with a rushhpc number taken seconds before it:

- rq (``rq worker -w rq.worker.SimpleWorker``, 2 processes): queued no-op
  jobs; compared with rushhpc's queue loop.
- Optuna, JournalStorage on JournalRedisBackend, RandomSampler, 2 processes,
  each ask -> suggest x1, x2 -> tell(0.0): compared with rushhpc's
  propose/evaluate/report loop (the same random search).
- Dramatiq (Redis broker, ``--processes 2 --threads 1``) and Celery (Redis
  broker, no result backend, 2 ``-P solo`` workers): optional, compared with
  the queue loop.

Queue peers: the queue is filled first, the workers are started, and after a
warm-up the jobs taken off the queue are counted over a fixed window (the
queue must not run dry: the note says if it did). Optuna workers count the
trials they told inside the window themselves. Value = jobs (trials) per
second, all workers together, median over the rounds; ratio = the median over
rounds of rushhpc's rate / the peer's; target: rushhpc at least 10x rq and
10x Optuna. A peer whose package is missing is
reported "not installed" and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import loops
import redis
from common import BENCH_DIR, Context, Row, bench_python_env, log, median, wait_for

N_WORKERS = 2


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_env(ctx: Context) -> dict[str, str]:
    env = bench_python_env()
    env["BENCH_REDIS_URL"] = ctx.server.url
    return env


def spawn(ctx: Context, name: str, argv: list[str]) -> subprocess.Popen:
    """Start one peer worker process in its own process group, output to a log file."""
    path = ctx.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with open(path, "ab") as logfile:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, cwd=BENCH_DIR, env=peer_env(ctx), stdout=logfile, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    proc.logpath = path  # type: ignore[attr-defined]
    return proc


def log_errors(procs: list[subprocess.Popen]) -> str:
    """The first error line in the workers' logs, or "" (a job that fails is also
    taken off the queue: a rate measured over failing jobs would be worthless)."""
    for p in procs:
        try:
            text = p.logpath.read_text(errors="replace")  # type: ignore[attr-defined]
        except OSError:
            continue
        for line in text.splitlines():
            if "Traceback" in line or "ERROR" in line or "Error:" in line:
                return line.strip()[:200]
    return ""


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a worker we started and the children it forked (its own process group, by id)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # forked children that outlived their parent
    except (ProcessLookupError, PermissionError):
        pass


def queue_peer(ctx: Context, name: str, fill: Callable[[int], None], start: Callable[[], list[subprocess.Popen]],
               ready: Callable[[], bool], remaining: Callable[[], int], n_jobs: int) -> dict:
    """Fill a peer's queue, start its workers, and count the jobs taken off it in the window."""
    t = time.perf_counter()
    fill(n_jobs)
    enqueue_rate = n_jobs / (time.perf_counter() - t)
    procs = start()
    try:
        wait_for(ready, 120, f"{name} workers to start")
        time.sleep(ctx.pick(1.0, 0.5))  # warm-up
        r0, t0 = remaining(), time.monotonic()
        time.sleep(ctx.pick(3.0, 1.0))
        r1, t1 = remaining(), time.monotonic()
    finally:
        for p in procs:
            stop_group(p)
    if err := log_errors(procs):
        raise RuntimeError(f"{name} workers logged an error: {err}")
    return {"rate": (r0 - r1) / (t1 - t0), "jobs": r0 - r1, "dry": r1 == 0, "enqueue_rate": enqueue_rate}


def points(n: int) -> list[tuple[float, float]]:
    return [(random.uniform(-5, 10), random.uniform(0, 15)) for _ in range(n)]


# ------------------------------------------------------------------------ peers
def run_rq(ctx: Context, n_jobs: int) -> dict:
    import peer_jobs
    from rq import Queue, Worker

    conn = redis.Redis.from_url(ctx.server.url)
    q = Queue("bench", connection=conn)

    def fill(n: int) -> None:
        for lo in range(0, n, 1000):
            q.enqueue_many([Queue.prepare_data(peer_jobs.noop, args=xy) for xy in points(min(1000, n - lo))])

    def start() -> list[subprocess.Popen]:
        argv = [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker", "-u", ctx.server.url,
                "--quiet", "bench"]
        return [spawn(ctx, "rq", argv) for _ in range(N_WORKERS)]

    return queue_peer(ctx, "rq", fill, start, lambda: Worker.count(connection=conn) >= N_WORKERS,
                      lambda: q.count, n_jobs)


def run_dramatiq(ctx: Context, n_jobs: int) -> dict:
    os.environ["BENCH_REDIS_URL"] = ctx.server.url
    import peer_dramatiq

    conn = redis.Redis.from_url(ctx.server.url)

    def fill(n: int) -> None:
        for x1, x2 in points(n):
            peer_dramatiq.noop.send(x1, x2)

    def start() -> list[subprocess.Popen]:
        argv = [sys.executable, "-m", "dramatiq", "peer_dramatiq", "--processes", str(N_WORKERS), "--threads", "1",
                "--queues", peer_dramatiq.QUEUE]
        return [spawn(ctx, "dramatiq", argv)]

    msgs = f"dramatiq:{peer_dramatiq.QUEUE}.msgs"  # a message's data lives here until it is acked
    return queue_peer(ctx, "dramatiq", fill, start, lambda: conn.zcard("dramatiq:__heartbeats__") >= N_WORKERS,
                      lambda: conn.hlen(msgs), n_jobs)


def run_celery(ctx: Context, n_jobs: int) -> dict:
    os.environ["BENCH_REDIS_URL"] = ctx.server.url
    import peer_celery

    conn = redis.Redis.from_url(ctx.server.url)

    def fill(n: int) -> None:
        for xy in points(n):
            peer_celery.noop.apply_async(args=xy)

    def start() -> list[subprocess.Popen]:
        return [spawn(ctx, "celery", [sys.executable, "-m", "celery", "-A", "peer_celery", "worker", "-P", "solo",
                                      "-c", "1", "-n", f"w{i}@bench", "-Q", peer_celery.QUEUE, "--without-gossip",
                                      "--without-mingle", "--without-heartbeat", "-l", "WARNING"])
                for i in range(N_WORKERS)]

    return queue_peer(ctx, "celery", fill, start, lambda: conn.scard("bench:celery:ready") >= N_WORKERS,
                      lambda: conn.llen(peer_celery.QUEUE), n_jobs)


def run_optuna(ctx: Context) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=JournalStorage(JournalRedisBackend(ctx.server.url)),
                        sampler=optuna.samplers.RandomSampler())
    conn = redis.Redis.from_url(ctx.server.url)
    warmup, window = ctx.pick(1.0, 0.5), ctx.pick(3.0, 1.0)
    argv = [sys.executable, str(BENCH_DIR / "peer_jobs.py"), "optuna", ctx.server.url, name, str(warmup), str(window)]
    procs = [spawn(ctx, "optuna", argv) for _ in range(N_WORKERS)]
    try:
        wait_for(lambda: conn.scard(f"bench:{name}:ready") >= N_WORKERS, 120, "Optuna workers to start")
        s, micro = conn.time()
        conn.set(f"bench:{name}:go", s + micro / 1e6 + 0.2)
        wait_for(lambda: conn.hlen(f"bench:{name}:done") >= N_WORKERS, warmup + window + 60, "Optuna workers to end")
        trials = sum(int(v) for v in conn.hvals(f"bench:{name}:done"))
    finally:
        for p in procs:
            stop_group(p)
    if err := log_errors(procs):
        raise RuntimeError(f"Optuna workers logged an error: {err}")
    return {"rate": trials / window, "jobs": trials, "dry": False}


# ------------------------------------------------------------------------ driver
def rushhpc_rate(ctx: Context, kind: str) -> float:
    """rushhpc's no-op rate with N_WORKERS workers for loop ``kind``, measured now."""
    m = loops.measure(ctx, kind, N_WORKERS, ctx.pick(3.0, 1.0), queue_size=ctx.pick(60_000, 25_000))
    m["rush"].reset()
    m["rush"].close()
    return m["rate"]


PEERS = [
    # name, package, runner, rushhpc loop compared with, has a target
    ("rq SimpleWorker, no-op jobs", "rq", lambda ctx, n: run_rq(ctx, n), "queue", True),
    ("Optuna, Redis journal storage, RandomSampler, ask/tell", "optuna", lambda ctx, n: run_optuna(ctx), "propose", True),
    ("Dramatiq, Redis broker, no-op actor", "dramatiq", lambda ctx, n: run_dramatiq(ctx, n), "queue", False),
    ("Celery, Redis broker, solo pool, no-op task", "celery", lambda ctx, n: run_celery(ctx, n), "queue", False),
]


def run(ctx: Context) -> list[Row]:
    """Rounds of: rushhpc's loop, then a peer, right after each other. Each round gives a
    ratio; the row shows the median peer rate and the median ratio over the rounds."""
    rounds = ctx.pick(3, 1)
    n_jobs = ctx.pick(20_000, 6_000)
    peers = [(label, pkg, runner, kind, t, version(pkg)) for label, pkg, runner, kind, t in PEERS]
    ours: dict[str, list[float]] = {"propose": [], "queue": []}
    results: dict[str, list[dict]] = {pkg: [] for _, pkg, *_ in peers}
    errors: dict[str, str] = {}
    for r in range(rounds):
        for kind, rates in ours.items():
            log(f"peers: round {r + 1}/{rounds}, rushhpc {kind} loop, {N_WORKERS} workers")
            ctx.server.flushall()
            rates.append(rushhpc_rate(ctx, kind))
        for _label, pkg, runner, kind, _, v in peers:
            if v is None or pkg in errors:
                continue
            log(f"peers: round {r + 1}/{rounds}, {pkg} {v}")
            ctx.server.flushall()
            try:
                m = runner(ctx, n_jobs)
            except Exception as e:  # noqa: BLE001 - one peer failing must not hide the others
                errors[pkg] = f"{type(e).__name__}: {e}"
                continue
            m["ratio"] = ours[kind][-1] / m["rate"] if m["rate"] > 0 else None
            results[pkg].append(m)

    rows = [Row("peers", f"rushhpc {kind} loop, no-op, {N_WORKERS} workers (reference)", round(median(rates)), "tasks/s",
                note=f"median of {len(rates)}, one per round: " + ", ".join(f"{x:,.0f}" for x in rates))
            for kind, rates in ours.items()]
    for label, pkg, _runner, kind, targeted, v in peers:
        name = f"{label}, {N_WORKERS} workers"
        if v is None:
            rows.append(Row("peers", name, None, "jobs/s", note="not installed (pip install -r bench/requirements.txt)"))
            continue
        if pkg in errors:
            rows.append(Row("peers", name, None, "jobs/s", note=f"{pkg} {v} failed: {errors[pkg]}"))
            continue
        ms = results[pkg]
        ratios = [m["ratio"] for m in ms if m["ratio"] is not None]
        ratio = round(median(ratios), 1) if ratios else None
        note = f"{pkg} {v}; per round: " + ", ".join(f"{m['rate']:,.0f}" for m in ms) + "/s"
        if "enqueue_rate" in ms[0]:
            note += f"; enqueued at {median([m['enqueue_rate'] for m in ms]):,.0f}/s"
        if any(m["dry"] for m in ms):
            note += "; the queue ran dry in a round: a lower bound"
        row = Row("peers", name, round(median([m["rate"] for m in ms])), "jobs/s", None, ratio,
                  f"rushhpc {kind} loop / this (median of per-round ratios)", note=note)
        if targeted:
            row.target, row.met = "rushhpc >= 10x", ratio is not None and ratio >= 10
        rows.append(row)
    return rows
