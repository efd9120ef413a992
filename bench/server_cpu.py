"""Redis server CPU per task (issue 12): what one network's Redis spends on each task.

    python bench/server_cpu.py                                   # the installed rushhpc
    python bench/server_cpu.py --python before=/venv-a/bin/python --python after=/venv-b/bin/python \
        --rounds 3 --json /tmp/cpu.json                          # versions side by side, alternating

Redis runs the whole network on one thread, so its CPU time per task is the ceiling of a
network: tasks/s <= 1 / (CPU per task). This measures it from Redis's own accounting:

- ``INFO cpu`` (used_cpu_user + used_cpu_sys of the redis-server process) before and after,
  divided by the tasks finished in between. CPU time, not wall time: less sensitive to
  other jobs on a shared machine than a wall clock, though a busy machine still inflates
  it (shared caches, hyperthreads). It counts everything: the network I/O (a loopback
  round trip costs Redis ~20 us of system time on a VM), the Lua, the data commands.
- ``INFO commandstats`` usec of EVALSHA per task: the time inside scripts (a wall clock
  inside Redis, so preemption on a loaded machine inflates it).

Scenarios (each in a fresh network, ``--workers`` real worker processes, no-op objective):

- ``propose``: the propose/evaluate/report loop (`workloads.propose_loop`: push_running_tasks
  + finish_tasks per task, deferred replies, as worker processes run).
- ``queue``: `rushhpc.queue_loop` on a queue filled beforehand (pop + finish per task); the
  manager's push is measured apart (``push_tasks``, per task, in calls of 1,000) and added
  in the ``queue + push`` line.
- ``queue, prefetch N``: the same with ``queue_loop(prefetch=N)`` (versions that have it).
- ``batched propose``: 100 tasks per push_running_tasks and per finish_tasks call.
- ``batched queue``: ``pop_tasks(100)`` + one finish_tasks of 100 (versions that have it).
- ``script ...``: one script replayed ``--replay`` times in a pipeline from this process
  (the I/O is amortised, so this is the script's own CPU per call), one task per call.

Each version runs in its own interpreter (``--python NAME=PATH``: that venv's rushhpc,
and its worker processes) against the same redis-server; rounds alternate the versions
so that a change of load hits both. The table gives the median over rounds and the
after/before ratio of each line; the load average is recorded with each round.
Run it from a directory without a rushhpc checkout (workers start there).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 100


# ----------------------------------------------------------------------------- child
def _stats(client) -> tuple[float, float, int]:
    cpu = client.info("cpu")
    cs = client.info("commandstats")
    ev = sum(v["usec"] for k, v in cs.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    calls = sum(v["calls"] for k, v in cs.items() if k not in ("cmdstat_info", "cmdstat_config"))
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], float(ev), calls


def batched_propose_loop(rush, batch: int = BATCH) -> None:
    """Propose ``batch`` points at once, evaluate the no-op, report them in one call."""
    import random

    while not rush.terminated:
        xss = [{"x1": random.uniform(-5, 10), "x2": random.uniform(0, 15)} for _ in range(batch)]
        keys = rush.push_running_tasks(xss)
        rush.finish_tasks(keys, [{"y": 0.0}] * len(keys))


def batched_queue_loop(rush, batch: int = BATCH) -> None:
    """Pop up to ``batch`` queued tasks in one call, report them in one call."""
    while not rush.terminated:
        tasks = rush.pop_tasks(batch, timeout=1)
        if tasks:
            rush.finish_tasks([t["key"] for t in tasks], [{"y": 0.0}] * len(tasks))


def _window(rush, server, window: float, warmup: float, queue: bool = False) -> dict:
    time.sleep(warmup)
    c0, e0, n0 = _stats(server)
    f0, t0 = rush.n_finished_tasks, time.monotonic()
    # a queue scenario ends its window early when the queue runs dry (fast batched loops
    # drain it within the window): counted are the tasks finished while there was work
    end = t0 + window
    while time.monotonic() < end:
        time.sleep(0.05)
        if queue and rush.n_queued_tasks == 0:
            break
    c1, e1, n1 = _stats(server)
    f1, t1 = rush.n_finished_tasks, time.monotonic()
    tasks = max(1, f1 - f0)
    return {"tasks": f1 - f0, "rate": (f1 - f0) / (t1 - t0), "cpu_us": (c1 - c0) / tasks * 1e6,
            "evalsha_us": (e1 - e0) / tasks, "commands": (n1 - n0) / tasks}


def child(port: int, params: dict) -> dict:
    import redis
    import workloads

    import rushhpc

    workloads.rushhpc_loops()
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    server = redis.Redis(port=port, decode_responses=True)
    cfg = rushhpc.redis_config(host="127.0.0.1", port=port)
    n_workers, window, warmup = params["workers"], params["window"], params["warmup"]
    has_prefetch = "prefetch" in inspect.signature(rushhpc.queue_loop).parameters
    has_pop_tasks = hasattr(rushhpc.RushWorker, "pop_tasks")
    out: dict = {"version": rushhpc.__version__, "path": str(Path(rushhpc.__file__).parent),
                 "loadavg": os.getloadavg()[0]}

    def loop_run(name: str, loop, queue: int = 0, **args) -> None:
        rush = rushhpc.Rush(f"cpu-{name.replace(' ', '-').replace(',', '')}-{os.getpid()}", config=cfg)
        try:
            ids = rush.start_local_workers(loop, n_workers=n_workers, **args)
            rush.wait_for_workers(worker_ids=ids, timeout=120)
            for lo in range(0, queue, 10_000):
                rush.push_tasks(workloads.random_xs(min(10_000, queue - lo)))
            r = _window(rush, server, window, warmup, queue=bool(queue))
            if queue:
                r["dry"] = rush.n_queued_tasks == 0
            out[name] = r
            rush.stop_workers(type="kill")
        finally:
            rush.reset()
            rush.close()

    queue_size = params["queue"]
    loop_run("propose", workloads.propose_loop, objective=workloads.noop)
    loop_run("queue", rushhpc.queue_loop, queue=queue_size, fun=workloads.noop)
    if has_prefetch:
        loop_run(f"queue, prefetch {params['prefetch']}", rushhpc.queue_loop, queue=queue_size, fun=workloads.noop,
                 prefetch=params["prefetch"])
    loop_run("batched propose", batched_propose_loop)
    if has_pop_tasks:
        loop_run("batched queue", batched_queue_loop, queue=queue_size * 3)

    # the manager's push, apart (no worker running)
    rush = rushhpc.Rush(f"cpu-push-{os.getpid()}", config=cfg)
    try:
        n = params["replay"]
        xss = workloads.random_xs(n)
        c0, e0, _ = _stats(server)
        for lo in range(0, n, 1000):
            rush.push_tasks(xss[lo : lo + 1000])
        c1, e1, _ = _stats(server)
        out["push_tasks"] = {"cpu_us": (c1 - c0) / n * 1e6, "evalsha_us": (e1 - e0) / n}
    finally:
        rush.reset()
        rush.close()
    out.update(replay(cfg, server, params["replay"], has_pop_tasks))
    return out


def replay(cfg, server, n: int, has_pop_tasks: bool) -> dict:
    """Each per-task script replayed ``n`` times in one pipeline: its own CPU per call."""
    import workloads

    import rushhpc

    res: dict = {}
    rush = rushhpc.Rush(f"cpu-replay-{os.getpid()}", config=cfg)
    w = rushhpc.RushWorker(rush.network_id, config=cfg)
    proto, wid = w._net.protocol, w.worker_id  # the worker's own script calls (a bench looks inside)
    raw = cfg.client()
    try:
        def run(name: str, calls: list, per: int = 1) -> None:
            p = raw.pipeline(transaction=False)
            for sha, keys, args in calls:
                p.evalsha(sha, len(keys), *keys, *args)
            c0, e0, _ = _stats(server)
            p.execute()
            c1, e1, _ = _stats(server)
            res[f"script {name}"] = {"cpu_us": (c1 - c0) / (len(calls) * per) * 1e6,
                                     "evalsha_us": (e1 - e0) / (len(calls) * per)}

        def as_call(call) -> tuple:
            return call.script.sha, call.keys, call.args

        proto.preload("push_running_tasks", "finish_tasks", "pop_task")
        xs_json = [json.dumps(x) for x in workloads.random_xs(n)]
        keys = [os.urandom(16).hex() for _ in range(n)]
        run("push_running_tasks (1 task)", [as_call(proto.push_running_tasks_call(wid, [(k, x, "")]))
                                            for k, x in zip(keys, xs_json)])
        attempt = "1"
        run("finish_tasks (1 task)", [as_call(proto.finish_tasks_call(wid, "finished", [(k, attempt, "ys", '{"y":0.0}',
                                                                                          "ys_extra", "")]))
                                      for k in keys])
        for lo in range(0, n, 1000):
            rush.push_tasks(workloads.random_xs(min(1000, n - lo)))
        script, bkeys = proto._bind("pop_task", wid)[:2]
        if has_pop_tasks:
            run("pop_task (1 task)", [(script.sha, bkeys, [proto.keys.prefix, wid, "", "1"]) for _ in range(n)])
        else:
            run("pop_task (1 task)", [(script.sha, bkeys, [proto.keys.prefix, wid, ""]) for _ in range(n)])
        # batched forms, 100 tasks per call
        keys = [os.urandom(16).hex() for _ in range(n)]
        groups = [list(zip(keys[lo : lo + BATCH], xs_json[lo : lo + BATCH], [""] * BATCH)) for lo in range(0, n, BATCH)]
        run(f"push_running_tasks ({BATCH} tasks), per task",
            [as_call(proto.push_running_tasks_call(wid, g)) for g in groups], per=BATCH)
        run(f"finish_tasks ({BATCH} tasks), per task",
            [as_call(proto.finish_tasks_call(wid, "finished", [(k, "1", "ys", '{"y":0.0}', "ys_extra", "")
                                                               for k, _, _ in g])) for g in groups], per=BATCH)
        if has_pop_tasks:
            for lo in range(0, n, 1000):
                rush.push_tasks(workloads.random_xs(min(1000, n - lo)))
            run(f"pop_tasks ({BATCH} tasks), per task",
                [(script.sha, bkeys, [proto.keys.prefix, wid, "", str(BATCH)]) for _ in range(n // BATCH)], per=BATCH)
    finally:
        raw.close()
        w.close()
        rush.reset()
        rush.close()
    return res


# ----------------------------------------------------------------------------- driver
LINES = [
    ("propose", "propose loop: server CPU per task"),
    ("queue", "queue loop (pop + finish): server CPU per task"),
    ("queue+push", "queue loop + the manager's push: server CPU per task"),
    ("prefetch", "queue loop, prefetch: server CPU per task"),
    ("batched propose", f"batched propose ({BATCH}/call): server CPU per task"),
    ("batched queue", f"batched queue (pop_tasks({BATCH})): server CPU per task"),
]


def table(results: dict[str, list[dict]], prefetch: int) -> str:
    names = list(results)
    rows: dict[str, dict[str, list[float]]] = {}
    rates: dict[str, dict[str, list[float]]] = {}
    for v, rounds in results.items():
        for r in rounds:
            for key, val in r.items():
                if isinstance(val, dict) and "cpu_us" in val:
                    rows.setdefault(key, {}).setdefault(v, []).append(val["cpu_us"])
                    rows.setdefault(key + " [EVALSHA usec]", {}).setdefault(v, []).append(val["evalsha_us"])
                    if "rate" in val:
                        rates.setdefault(key, {}).setdefault(v, []).append(val["rate"])
            if "queue" in r and "push_tasks" in r:
                rows.setdefault("queue + push_tasks", {}).setdefault(v, []).append(
                    r["queue"]["cpu_us"] + r["push_tasks"]["cpu_us"])
    head = "| line | " + " | ".join(f"{n} (us/task)" for n in names)
    head += " | ratio " + "/".join(reversed(names)) + " |" if len(names) == 2 else " |"
    lines = [head, "|" + " --- |" * (len(names) + 1 + (len(names) == 2))]

    def fmt(d: dict[str, list[float]], digits: int = 1) -> list[str]:
        cells = [f"{statistics.median(d[n]):,.{digits}f}" if n in d else "n/a" for n in names]
        if len(names) == 2:
            a, b = (statistics.median(d[n]) if n in d else None for n in names)
            cells.append(f"{b / a:.2f}" if a and b else "")
        return cells

    for key, d in rows.items():
        lines.append(f"| {key} | " + " | ".join(fmt(d)) + " |")
    for key, d in rates.items():
        lines.append(f"| {key}: tasks/s (not us) | " + " | ".join(fmt(d, 0)) + " |")
    loads = {n: [round(r["loadavg"], 1) for r in rs] for n, rs in results.items()}
    lines.append("")
    lines.append("load average (1 min) at each round: " + "; ".join(f"{n} {v}" for n, v in loads.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", default=[], metavar="NAME=PATH",
                    help="a version to measure: a name and its interpreter (repeat; default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--window", type=float, default=3.0, help="seconds counted per loop")
    ap.add_argument("--warmup", type=float, default=0.7)
    ap.add_argument("--queue", type=int, default=60_000, help="tasks queued for each queue scenario")
    ap.add_argument("--prefetch", type=int, default=8)
    ap.add_argument("--replay", type=int, default=10_000, help="calls of each replayed script")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, metavar=("PORT", "PARAMS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(int(args.child[0]), json.loads(args.child[1]))), flush=True)
        return 0
    from common import RedisServer, log

    versions = [tuple(p.split("=", 1)) for p in args.python] or [("this", sys.executable)]
    params = {"workers": args.workers, "window": args.window, "warmup": args.warmup, "queue": args.queue,
              "prefetch": args.prefetch, "replay": args.replay}
    work = Path(tempfile.mkdtemp(prefix="rushhpc-cpu-"))
    server = RedisServer(work)
    results: dict[str, list[dict]] = {name: [] for name, _ in versions}
    try:
        for r in range(args.rounds):
            for name, py in versions:
                log(f"server_cpu: round {r + 1}/{args.rounds}, {name} ({py}); load {os.getloadavg()[0]:.1f}")
                server.flushall()
                proc = subprocess.run([py, str(Path(__file__).resolve()), "--child", str(server.port),
                                       json.dumps(params)], cwd=work, capture_output=True, text=True,
                                      env={**os.environ, "RUSHHPC_RUN_DIR": str(work / "run")})
                res = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not res:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                    raise RuntimeError(f"the {name} child failed ({proc.returncode})")
                results[name].append(json.loads(res[-1][7:]))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"redis-server {server.version}; {args.workers} worker processes per loop, {args.window:g} s windows, "
          f"{args.rounds} round(s), median shown")
    print(table(results, args.prefetch))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
