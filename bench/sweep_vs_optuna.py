"""Model-based sweeps: rushhpc's ``strategy: tpe`` against Optuna's own distributed mode.

Both systems run the same sampler, Optuna's ``TPESampler`` (``n_startup_trials`` 10,
``constant_liar=True``, seeded per worker), with the same number of worker processes, the
same budget of evaluations and the same objective, on one private Redis:

- **rushhpc**: ``rushhpc.sweep`` with ``strategy: tpe`` and local workers. Each worker reads
  the finished and running tasks from Redis, fits its own sampler on them, proposes, creates
  its task (capped at the budget) and evaluates (`rushhpc.sweeps.worker.model_loop`).
- **Optuna**: N processes, each ``study.optimize(objective, n_trials=B/N)`` on one shared
  study whose storage is ``JournalStorage(JournalRedisBackend(url))`` (Optuna's Redis journal).
  ``n_trials`` per process is Optuna's way to an exact total; a shared ``MaxTrialsCallback``
  would overshoot it.

Objectives (minimised): Branin (2-D, minimum 0.397887) and Hartmann-6 (6-D, minimum
-3.32237), each with an artificial cost (``time.sleep``, default 50 ms) so that the workers'
utilisation means something. The objective measures its own time.

Reported per function and system: best value (median of the seeds, min and max), wall time
(median; from starting the workers to the last one ending, startup included), the active
span (first evaluation's start to last evaluation's end), utilisation = time inside the
objective / (workers x wall time) (and the same over the active span), the overhead per
evaluation ((workers x span - time in the objective) / evaluations), evaluations done.

    python bench/sweep_vs_optuna.py            # 5 seeds, 4 workers, about 3-4 minutes
    python bench/sweep_vs_optuna.py --quick    # 1 seed, small budgets, under 2 minutes
    python bench/sweep_vs_optuna.py --seeds 3 --workers 2 --cost 0.05 --json out.json

Tables go to stdout, progress to stderr. A private ``redis-server`` from PATH is started on a
free loopback port (`bench.common.RedisServer`), emptied between runs, stopped at the end.
This module is also the objective's module: rushhpc's workers import it by file path, and
``--optuna-worker`` runs one Optuna worker process; keep its top level free of heavy imports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()

# ------------------------------------------------------------------------------ objectives
_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
_P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
      [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
_ALPHA = [1.0, 1.2, 3.0, 3.2]


def branin_value(x1: float, x2: float) -> float:
    """The Branin function on [-5, 10] x [0, 15]; global minimum 0.397887."""
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6_value(xs: list[float]) -> float:
    """The Hartmann-6 function on [0, 1]^6; global minimum -3.32237."""
    total = 0.0
    for i in range(4):
        inner = sum(_A[i][j] * (xs[j] - _P[i][j] * 1e-4) ** 2 for j in range(6))
        total -= _ALPHA[i] * math.exp(-inner)
    return total


FUNCTIONS: dict[str, dict[str, Any]] = {
    "branin": {"space": {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, "optimum": 0.397887,
               "value": lambda p: branin_value(p["x1"], p["x2"])},
    "hartmann6": {"space": {f"x{i}": (0.0, 1.0) for i in range(1, 7)}, "optimum": -3.32237,
                  "value": lambda p: hartmann6_value([p[f"x{i}"] for i in range(1, 7)])},
}


def _timed(fun: str, params: dict[str, float], cost: float) -> dict[str, float]:
    t0, p0 = time.time(), time.perf_counter()
    if cost > 0:
        time.sleep(cost)
    y = FUNCTIONS[fun]["value"](params)
    dt = time.perf_counter() - p0
    return {"y": y, "t_obj": dt, "t_start": t0, "t_end": t0 + dt}


def branin(x1: float, x2: float, cost: float = 0.0) -> dict[str, float]:
    """rushhpc's objective: Branin after ``cost`` seconds, with its own timing as outputs."""
    return _timed("branin", {"x1": x1, "x2": x2}, cost)


def hartmann6(x1: float, x2: float, x3: float, x4: float, x5: float, x6: float, cost: float = 0.0) -> dict[str, float]:
    """rushhpc's objective: Hartmann-6 after ``cost`` seconds, with its own timing as outputs."""
    return _timed("hartmann6", {"x1": x1, "x2": x2, "x3": x3, "x4": x4, "x5": x5, "x6": x6}, cost)


N_STARTUP = 10


# ------------------------------------------------------------------------------ Optuna's side
def optuna_worker(url: str, study_name: str, fun: str, n_trials: int, seed: int, cost: float, out: str) -> None:
    """One process of Optuna's distributed mode: ``study.optimize`` on the shared journal study;
    writes its evaluations' timings (JSON) to ``out``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.TPESampler(n_startup_trials=N_STARTUP, constant_liar=True, seed=seed)
    study = optuna.load_study(study_name=study_name, storage=JournalStorage(JournalRedisBackend(url)), sampler=sampler)
    space = FUNCTIONS[fun]["space"]
    timings: list[list[float]] = []

    def objective(trial: Any) -> float:
        params = {k: trial.suggest_float(k, lo, hi) for k, (lo, hi) in space.items()}
        r = _timed(fun, params, cost)
        timings.append([r["t_start"], r["t_end"], r["t_obj"]])
        return r["y"]

    study.optimize(objective, n_trials=n_trials)
    Path(out).write_text(json.dumps(timings))


def run_optuna(server: Any, fun: str, budget: int, workers: int, seed: int, cost: float, work: Path) -> dict[str, Any]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalRedisBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = f"bench-{fun}-{seed}"
    storage = JournalStorage(JournalRedisBackend(server.url))
    optuna.create_study(study_name=name, storage=storage, direction="minimize")
    shares = [budget // workers + (1 if i < budget % workers else 0) for i in range(workers)]
    outs = [work / f"optuna-{fun}-{seed}-{i}.json" for i in range(workers)]
    logs = [work / f"optuna-{fun}-{seed}-{i}.log" for i in range(workers)]
    t0, w0 = time.perf_counter(), time.time()
    procs = []
    for i in range(workers):
        argv = [sys.executable, str(HERE), "--optuna-worker", server.url, name, fun, str(shares[i]),
                str(seed * 1000 + i), str(cost), str(outs[i])]
        with open(logs[i], "wb") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True))
    try:
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall, w1 = time.perf_counter() - t0, time.time()
    for p, log in zip(procs, logs):
        if p.returncode != 0:
            raise RuntimeError(f"an Optuna worker failed ({p.returncode}): {log.read_text()[-2000:]}")
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    timings = [row for o in outs for row in json.loads(o.read_text())]
    return {"best": min(t.value for t in done), "evaluations": len(done), "wall": wall,
            **_timing(timings, wall, workers, w0, w1)}


# ------------------------------------------------------------------------------ rushhpc's side
def run_rushhpc(server: Any, fun: str, budget: int, workers: int, seed: int, cost: float, work: Path) -> dict[str, Any]:
    import rushhpc

    space: dict[str, Any] = {k: {"type": "float", "low": lo, "high": hi} for k, (lo, hi) in FUNCTIONS[fun]["space"].items()}
    space["cost"] = cost  # a fixed parameter: passed to the objective, not sampled
    cfg = {
        "objective": f"{HERE}:{fun}", "space": space, "strategy": {"name": "tpe", "n_startup_trials": N_STARTUP},
        "budget": {"evaluations": budget}, "direction": "minimize", "workers": {"n": workers, "launcher": "local"},
        "redis": {"url": server.url}, "output": str(work / f"rush-{fun}-{seed}"), "seed": seed, "progress": "none",
        "name": f"bench-{fun}",
    }
    t0, w0 = time.perf_counter(), time.time()
    with contextlib.redirect_stdout(sys.stderr):  # the sweep's summary is progress here
        df = rushhpc.sweep(cfg)
    wall, w1 = time.perf_counter() - t0, time.time()
    if df.attrs.get("exit_code") != 0:
        raise RuntimeError(f"the rushhpc sweep did not complete: {df.attrs.get('status')} {df.attrs.get('reason')}")
    fin = df[df["state"] == "finished"]
    timings = [[float(a), float(b), float(c)] for a, b, c in zip(fin["t_start"], fin["t_end"], fin["t_obj"])]
    return {"best": float(fin["y"].min()), "evaluations": int(len(df)), "wall": wall,
            **_timing(timings, wall, workers, w0, w1)}


def _timing(timings: list[list[float]], wall: float, workers: int, w0: float, w1: float) -> dict[str, float]:
    """Busy time, active span, utilisations, overhead per evaluation; ``w0``/``w1``: the run's
    start and end (Unix seconds) for the time before the first evaluation and after the last."""
    busy = sum(t[2] for t in timings)
    first, last = min(t[0] for t in timings), max(t[1] for t in timings)
    span = last - first
    # what each evaluation cost its worker besides the objective, over the active span (proposal,
    # Redis, idling at the end while others finish): the per-evaluation overhead of the system
    overhead = (workers * span - busy) / len(timings)
    return {"busy": busy, "span": span, "util": busy / (workers * wall), "util_span": busy / (workers * span),
            "overhead": overhead, "before": first - w0, "after": w1 - last}


# ------------------------------------------------------------------------------ driver
SYSTEMS = {"rushhpc tpe": run_rushhpc, "Optuna journal": run_optuna}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import optuna

    import rushhpc

    return {"nproc": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "rushhpc": rushhpc.__version__, "optuna": optuna.__version__}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (function, system): medians over seeds, min and max of the best value."""
    rows = []
    keys = sorted({(r["function"], r["system"]) for r in runs}, key=lambda k: (list(FUNCTIONS).index(k[0]), k[1]))
    for fun, system in keys:
        rs = [r for r in runs if r["function"] == fun and r["system"] == system]
        best = [r["best"] for r in rs]
        med = statistics.median
        rows.append({
            "function": fun, "system": system, "seeds": len(rs), "best_median": med(best), "best_min": min(best),
            "best_max": max(best), "gap_median": med(best) - FUNCTIONS[fun]["optimum"],
            "wall_median": med([r["wall"] for r in rs]), "span_median": med([r["span"] for r in rs]),
            "util_median": med([r["util"] for r in rs]), "util_span_median": med([r["util_span"] for r in rs]),
            "overhead_median": med([r["overhead"] for r in rs]), "before_median": med([r["before"] for r in rs]),
            "after_median": med([r["after"] for r in rs]),
            "evaluations": sorted({r["evaluations"] for r in rs}),
        })
    return rows


def markdown(rows: list[dict[str, Any]], budgets: dict[str, int]) -> str:
    head = ("| function | system | budget | evaluations | best (median) | best min / max | gap to optimum (median) "
            "| wall s (median) | before first / after last evaluation s | active span s (median) "
            "| utilisation (wall) | utilisation (span) | overhead per evaluation ms (median) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['function']} | {r['system']} | {budgets[r['function']]} | {'/'.join(map(str, r['evaluations']))} "
            f"| {r['best_median']:.4f} | {r['best_min']:.4f} / {r['best_max']:.4f} | {r['gap_median']:.4f} "
            f"| {r['wall_median']:.2f} | {r['before_median']:.2f} / {r['after_median']:.2f} | {r['span_median']:.2f} "
            f"| {r['util_median']:.1%} | {r['util_span_median']:.1%} "
            f"| {r['overhead_median'] * 1000:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, budgets 30 (branin) and 40 (hartmann6)")
    ap.add_argument("--seeds", type=int, help="seeds per function and system (default 5, quick 1)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes of each system (default 4)")
    ap.add_argument("--cost", type=float, default=0.05, help="seconds each evaluation sleeps (default 0.05)")
    ap.add_argument("--budget-branin", type=int, help="evaluations on Branin (default 100, quick 30)")
    ap.add_argument("--budget-hartmann6", type=int, help="evaluations on Hartmann-6 (default 200, quick 40)")
    ap.add_argument("--only", default="branin,hartmann6", help="functions, comma-separated")
    ap.add_argument("--json", type=Path, help="also write the runs, the summary and the machine here")
    args = ap.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)
    budgets = {"branin": args.budget_branin or (30 if args.quick else 100),
               "hartmann6": args.budget_hartmann6 or (40 if args.quick else 200)}
    funs = [f.strip() for f in args.only.split(",") if f.strip()]
    for f in funs:
        if f not in FUNCTIONS:
            ap.error(f"--only: unknown function {f!r} (known: {', '.join(FUNCTIONS)})")

    sys.path.insert(0, str(HERE.parent))
    from common import RedisServer

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="rushhpc-bench-tpe-"))
    os.environ["RUSHHPC_RUN_DIR"] = str(work / "run")  # the workers' logs, not ~/.rushhpc
    server = RedisServer(work)
    info["redis"] = server.version
    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    try:
        for fun in funs:
            for s in range(seeds):
                seed = 1 + s
                order = list(SYSTEMS) if s % 2 == 0 else list(SYSTEMS)[::-1]  # alternate: load drifts
                for system in order:
                    server.flushall()
                    r = SYSTEMS[system](server, fun, budgets[fun], args.workers, seed, args.cost, work)
                    r.update(function=fun, system=system, seed=seed)
                    runs.append(r)
                    print(f"[{time.perf_counter() - t_all:6.1f} s] {fun} seed {seed} {system}: best {r['best']:.4f}, "
                          f"{r['evaluations']} evaluations, wall {r['wall']:.2f} s, utilisation {r['util']:.1%}",
                          file=sys.stderr, flush=True)
    finally:
        server.stop()
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["total_s"] = round(time.perf_counter() - t_all, 1)
    rows = summarise(runs)
    print(f"\nrushhpc tpe vs Optuna's distributed TPE (Redis journal): {args.workers} workers, {seeds} seed(s), "
          f"objective cost {args.cost * 1000:.0f} ms, n_startup_trials {N_STARTUP}, constant liar")
    print(f"machine: nproc {info['nproc']}, load average {info['loadavg_start']} at start, {info['loadavg_end']} at end; "
          f"python {info['python']}, rushhpc {info['rushhpc']}, optuna {info['optuna']}, redis {info['redis']}; "
          f"{info['total_s']} s in all\n")
    print(markdown(rows, budgets))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "budgets": budgets, "workers": args.workers,
                                         "cost": args.cost, "seeds": seeds, "summary": rows, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--optuna-worker":
        url, study, fun, n, seed, cost, out = sys.argv[2:9]
        optuna_worker(url, study, fun, int(n), int(seed), float(cost), out)
        sys.exit(0)
    sys.exit(main())
