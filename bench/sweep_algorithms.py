"""Early stopping and several objectives: rushhpc's sweeps against Optuna, Ray Tune and Syne Tune (issue 19).

A benchmark, not a test: it prints Markdown tables (stdout; progress on stderr) and exits 0 unless it crashed.

**1. Multi-fidelity** (`sweep_algorithms_functions`: a synthetic learning curve per configuration, 4 parameters,
noise seeded, every epoch a sleep of ``--cost`` s, max 27 epochs, eta 3, random sampling everywhere), the same
``--workers`` (8) and the same wall-time budget (``--walltime``) for each tool, ``--seeds`` seeds each:

- ``rushhpc``: ``python -m rushhpc sweep`` through the real CLI, ``strategy: {name: asha, eta: 3}``,
  ``fidelity: {name: epochs, min: 1, max: 27}``, local workers, embedded Redis, ``budget.walltime``. Its objective
  takes ``checkpoint_dir`` and trains only the epochs its lower rung did not. ``rushhpc-hb``: the same with
  ``strategy: {name: hyperband, eta: 3}`` (for information; the targets are asha's).
- ``optuna-hb`` / ``optuna-sha``: N processes on one ``JournalStorage`` (file backend), ``HyperbandPruner`` /
  ``SuccessiveHalvingPruner``; ``ray``: ``ASHAScheduler``; ``syne-tune``: ``ASHA`` with the local backend (see
  ``sweep_algorithms_peers``). These stop a trial at a rung or let it continue in its process, so no tool ever
  trains an epoch twice: **checkpoint resumption is the same for all (all resume)**.

Measured from the timing log the objective writes (every epoch or rung evaluation: start, end, fidelity from and
to, value), the same way for every tool; the clock starts when the tool's processes are launched (startup counts):
best loss **at 27 epochs** reached by 25/50/75/100 % of the budget, epochs trained (the fidelity spent),
configurations started and trained to 27, wall time (launch to the last process's end), utilisation =
time inside the objective / (workers x wall time), and over the active span (first start to last end).
Targets (issue 19): rushhpc reaches the best peer's final best value within 0.8x that peer's wall time
(median over seeds), and utilisation >= 95 %.

**2. Several objectives** (``sweep_algorithms_mo``): hypervolume after the same number of evaluations on ZDT1 and
ZDT2, rushhpc (``metric: [f1, f2]``, ``strategy: tpe`` / ``{name: optuna, sampler: NSGAIISampler}``) against
Optuna's multi-objective TPE and NSGA-II (N processes, one journal file). Skipped with a line while rushhpc's
sweeps take a single metric.

    python bench/sweep_algorithms.py                       # all tools that import, 3 seeds, 60 s each: about 18 min
    python bench/sweep_algorithms.py --quick               # rushhpc and Optuna only, 1 seed: under 2 minutes
    /work/venv-peers/bin/python bench/sweep_algorithms.py --tools rushhpc,ray --seeds 2 --walltime 20

Peers that do not import in the running Python are skipped with a line saying why.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_algorithms_functions as fx  # noqa: E402
import sweep_algorithms_run as rn  # noqa: E402

TOOLS = ("rushhpc", "rushhpc-hb", "optuna-hb", "optuna-sha", "ray", "syne-tune")
NEEDS = {"rushhpc": "rushhpc", "rushhpc-hb": "rushhpc", "optuna-hb": "optuna", "optuna-sha": "optuna", "ray": "ray.tune",
         "syne-tune": "syne_tune"}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MAX = fx.MAX_EPOCHS


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ runs
def rushhpc_yaml(out: Path, a: argparse.Namespace, seed: int, strategy: str = "asha") -> str:
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
             "layers": {"type": "int", "low": 1, "high": 8},
             "dropout": {"type": "float", "low": 0.0, "high": 0.9},
             "wd": {"type": "float", "low": 1e-6, "high": 0.1, "log": True}}
    cfg = {"objective": f"{fx.__file__}:train", "metric": "loss", "space": space,
           "fidelity": {"name": "epochs", "min": 1, "max": MAX}, "strategy": {"name": strategy, "eta": 3},
           "budget": {"walltime": a.walltime}, "workers": {"n": a.workers}, "redis": "embedded",
           "output": str(out), "seed": seed, "progress": "none"}
    return json.dumps(cfg)  # JSON is YAML


def launch_mf(tool: str, a: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """One run of one tool; returns its timing records and process facts."""
    run_dir = work / f"{tool}-{seed}"
    logdir = run_dir / "log"
    logdir.mkdir(parents=True)
    token = uuid.uuid4().hex
    t0 = time.time()  # the budget's clock starts now, for every tool; a process gets the time its budget ends
    env = rn.base_env(token, {fx.LOG_ENV: str(logdir), fx.SEED_ENV: str(seed), fx.COST_ENV: str(a.cost),
                              "SYNETUNE_FOLDER": str(run_dir / "syne")})
    py = sys.executable
    common = {"cost": a.cost, "fseed": seed, "max": MAX, "workers": a.workers, "logdir": str(logdir),
              "work": str(run_dir)}
    if tool.startswith("rushhpc"):
        yaml = run_dir / "sweep.yaml"
        yaml.write_text(rushhpc_yaml(run_dir / "out", a, seed, "hyperband" if tool == "rushhpc-hb" else "asha"))
        argvs = [[py, "-m", "rushhpc", "sweep", str(yaml)]]
    elif tool.startswith("optuna"):
        import optuna

        storage = str(run_dir / "journal.log")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from sweep_algorithms_peers import _journal

        optuna.create_study(study_name="mf", storage=_journal(storage), direction="minimize")
        argvs = [[py, str(rn.HERE / "sweep_algorithms_peers.py"), "optuna-mf", json.dumps(
            {**common, "tool": tool, "storage": storage, "study": "mf", "seed": seed * 1000 + i,
             "pruner": "hyperband" if tool == "optuna-hb" else "sha", "deadline": t0 + a.walltime})] for i in range(a.workers)]
    else:
        argvs = [[py, str(rn.HERE / "sweep_algorithms_peers.py"), tool, json.dumps(
            {**common, "seed": seed, "deadline": t0 + a.walltime,
             "ray_tmp": str(Path(tempfile.gettempdir()) / f"ray-{token[:8]}")})]]
    logs = [run_dir / f"proc-{i}.log" for i in range(len(argvs))]
    res = rn.run_group(argvs, env, run_dir, logs, min(t0 + a.walltime + a.grace, a.end_by), token)
    res["t_launch"] = t0
    shutil.rmtree(Path(tempfile.gettempdir()) / f"ray-{token[:8]}", ignore_errors=True)  # Ray's session files, if any
    res["records"] = rn.read_log(logdir)
    res["errors"] = [rn.tail(lg) for lg, c in zip(logs, res["codes"]) if c not in (0,)]
    if tool.startswith("rushhpc"):
        res["results_rows"] = _count_rows(run_dir / "out" / "results.csv")
    return res


def _count_rows(path: Path) -> int | None:
    """Finished rows of rushhpc's results.csv."""
    import csv

    try:
        with open(path, newline="") as f:
            return sum(1 for row in csv.DictReader(f) if row.get("state") == "finished")
    except OSError:
        return None


def summarise(res: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    recs, t_launch = res["records"], res["t_launch"]
    wall = res["t_end"] - t_launch
    busy = sum(r["t1"] - r["t0"] for r in recs)
    full = sorted((r["t1"] - t_launch, r["value"]) for r in recs if r["f1"] == MAX)
    curve, best = [], math.inf
    for t, v in full:
        best = min(best, v)
        curve.append((t, best))
    at = {f: min((v for t, v in full if t <= f * a.walltime), default=math.nan) for f in FRACTIONS}
    span = (max(r["t1"] for r in recs) - min(r["t0"] for r in recs)) if recs else math.nan
    return {"wall": wall, "busy": busy, "util": busy / (a.workers * wall) if wall > 0 else math.nan,
            "util_span": busy / (a.workers * span) if recs and span > 0 else math.nan,
            "fidelity": sum(r["f1"] - r["f0"] for r in recs), "configs": sum(1 for r in recs if r["f0"] == 0),
            "full": len(full), "best": min((v for _, v in full), default=math.nan), "at": at, "curve": curve,
            "first_start": min((r["t0"] for r in recs), default=math.nan) - t_launch,
            "codes": res["codes"], "strays": res["strays"], "errors": res["errors"],
            "results_rows": res.get("results_rows"), "evaluations": len(recs)}


def time_to(curve: list[tuple[float, float]], value: float) -> float:
    """When a best-so-far curve first reached ``value`` (inf: never)."""
    return next((t for t, b in curve if b <= value + 1e-12), math.inf)


# ------------------------------------------------------------------------------------------ tables
def med(xs: list[float]) -> float:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else math.nan


def fmt(x: float, spec: str = ".3f", suffix: str = "") -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "never"
    return format(x, spec) + suffix


def mf_tables(runs: dict[str, list[dict[str, Any]]], a: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    out = ["| tool | best at 25 % | 50 % | 75 % | 100 % of the budget | at the end (min-max over seeds) | wall s | "
           "epochs trained | configs started / at 27 | utilisation | over the active span | first eval after s |",
           "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for tool, rs in runs.items():
        bests = [r["best"] for r in rs]
        rng = f"{fmt(min(bests))}-{fmt(max(bests))}" if bests else "-"
        out.append(f"| {tool} | " + " | ".join(fmt(med([r["at"][f] for r in rs])) for f in FRACTIONS)
                   + f" | {rng} | {fmt(med([r['wall'] for r in rs]), '.1f')}"
                   f" | {fmt(med([float(r['fidelity']) for r in rs]), '.0f')}"
                   f" | {fmt(med([float(r['configs']) for r in rs]), '.0f')} / {fmt(med([float(r['full']) for r in rs]), '.0f')}"
                   f" | {fmt(100 * med([r['util'] for r in rs]), '.1f')} %"
                   f" | {fmt(100 * med([r['util_span'] for r in rs]), '.1f')} %"
                   f" | {fmt(med([r['first_start'] for r in rs]), '.1f')} |")
    verdict: dict[str, Any] = {}
    peers = [t for t in runs if not t.startswith("rushhpc") and runs[t]]
    if "rushhpc" in runs and peers:
        best_peer = min(peers, key=lambda t: med([r["best"] for r in runs[t]]))
        per_peer = {}
        for peer in peers:
            ratios, lines = [], []
            for i, (rr, pr) in enumerate(zip(runs["rushhpc"], runs[peer])):
                t = time_to(rr["curve"], pr["best"])
                ratios.append(t / pr["wall"])
                reached = f"reached it after {t:.1f} s = {t / pr['wall']:.2f}x" if math.isfinite(t) else "never reached it"
                lines.append(f"seed {a.seed_list[i]}: best {fmt(pr['best'])} in {fmt(pr['wall'], '.1f')} s, rushhpc {reached}")
            per_peer[peer] = (med(ratios), lines)
            out.append(f"- against {peer}: " + "; ".join(lines) + f" (median {fmt(per_peer[peer][0], '.2f', 'x')}).")
        ratio, lines = per_peer[best_peer]
        util = med([r["util"] for r in runs["rushhpc"]])
        verdict = {"best_peer": best_peer, "ratio": ratio, "util": util, "lines": lines,
                   "time_met": ratio <= 0.8, "util_met": util >= 0.95}
        out.insert(2 + len(runs), "")
        out.insert(3 + len(runs), "When rushhpc reached each peer's best value (at 27 epochs), as a multiple of that peer's "
                                  "wall time:")
        out += ["", f"Best peer (lowest median best): **{best_peer}**.", "",
                f"- Target: rushhpc reaches the best peer's best value in at most 0.8x its wall time (median "
                f"{fmt(ratio, '.2f', 'x')}): **{'met' if ratio <= 0.8 else 'missed'}**.",
                f"- Target: rushhpc's utilisation >= 95 % (median {fmt(100 * util, '.1f')} % of workers x wall time): "
                f"**{'met' if util >= 0.95 else 'missed'}**."]
    return out, verdict


# ------------------------------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module's docstring (and docs/benchmarks.md) for what is measured.")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: rushhpc and Optuna only, 1 seed, 12 s budgets, "
                    "small multi-objective budget; under 2 minutes")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)} (default all)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per tool (default 3)")
    ap.add_argument("--workers", type=int, default=8, help="workers of every tool (default 8)")
    ap.add_argument("--walltime", type=float, default=60.0, help="wall-time budget of each run, s (default 60)")
    ap.add_argument("--cost", type=float, default=0.05, help="seconds per epoch (default 0.05)")
    ap.add_argument("--grace", type=float, default=60.0, help="how long past its budget a run may take before it is "
                    "killed, s (default 60)")
    ap.add_argument("--mo-evaluations", type=int, default=200, help="evaluations per multi-objective run (default 200)")
    ap.add_argument("--mo-cost", type=float, default=0.02, help="seconds per multi-objective evaluation (default 0.02)")
    ap.add_argument("--skip-mo", action="store_true", help="skip the multi-objective part")
    ap.add_argument("--skip-mf", action="store_true", help="skip the multi-fidelity part")
    ap.add_argument("--time-limit", type=float, default=0.0, help="runs that could not end within this many seconds "
                    "of the start are skipped (with a line), and every process is killed by then; 0: no limit "
                    "(default; --quick: 110)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args(argv)
    a.problems = ("zdt1", "zdt2")
    if a.quick:
        a.tools, a.seeds, a.walltime, a.grace, a.mo_evaluations = "rushhpc,optuna-hb", 1, 12.0, 30.0, 48
        a.time_limit, a.problems = a.time_limit or 110.0, ("zdt1",)
    a.end_by = time.time() + a.time_limit if a.time_limit > 0 else math.inf
    a.seed_list = list(range(1, a.seeds + 1))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    load0 = os.getloadavg()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="sweep-algorithms-"))
    cmd = " ".join([Path(sys.executable).name, "bench/sweep_algorithms.py"] + (argv if argv is not None else sys.argv[1:]))
    header = [f"`{cmd}`"
              f" on {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              + ", ".join(f"{k} {v}" for k, v in rn.versions().items())
              + f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
              f"rushhpc from {rn.rushhpc_root()} at {rn.commit(rn.rushhpc_root())}.",
              f"Load average at start: {', '.join(f'{x:.2f}' for x in load0)}."]
    body: list[str] = []
    record: dict[str, Any] = {"args": {k: v for k, v in vars(a).items() if k != "json"}, "load_start": load0}
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    if not a.skip_mf:
        runs: dict[str, list[dict[str, Any]]] = {}
        skipped = []
        for t in tools:
            why = rn.importable(NEEDS[t]) if t in NEEDS else f"unknown tool (one of {', '.join(TOOLS)})"
            if why:
                skipped.append(f"- {t}: skipped, does not import here ({why}).")
            else:
                runs[t] = []
        for seed in a.seed_list:  # interleaved: tool after tool for each seed, so load drifts hit all alike
            for t in runs:
                if time.time() + a.walltime + 5 > a.end_by:
                    skipped.append(f"- {t} seed {seed}: not run, it could not end within --time-limit {a.time_limit:g} s.")
                    continue
                log(f"multi-fidelity: {t}, seed {seed}, {a.workers} workers, {a.walltime:g} s")
                s = summarise(launch_mf(t, a, seed, work), a)
                runs[t].append(s)
                log(f"  best {fmt(s['best'])}, wall {s['wall']:.1f} s, util {100 * s['util']:.1f} %, epochs "
                    f"{s['fidelity']}, {s['strays']} strays killed, codes {s['codes'][:3]}{'...' if len(s['codes']) > 3 else ''}"
                    + (f", errors: {s['errors'][0]}" if s["errors"] else ""))
        runs = {t: rs for t, rs in runs.items() if rs}
        table, verdict = mf_tables(runs, a)
        body += [f"### Early stopping: {a.workers} workers, {a.walltime:g} s each, {a.cost:g} s per epoch, max {MAX} "
                 f"epochs, eta 3, seeds {a.seed_list} (medians over seeds)", ""] + table + [""] + skipped
        for t, rs in runs.items():
            for i, r in enumerate(rs):
                if r["errors"] or r["strays"] or (t.startswith("rushhpc") and r["results_rows"] != r["evaluations"]):
                    body.append(f"- {t} seed {a.seed_list[i]}: exit codes {r['codes'][:4]}, {r['strays']} stray "
                                f"processes killed, finished rows of results.csv {r['results_rows']}, logged evaluations "
                                f"{r['evaluations']}" + (f"; {r['errors'][0]}" if r["errors"] else ""))
        record["mf"] = {t: [{k: v for k, v in r.items() if k != "curve"} for r in rs] for t, rs in runs.items()}
        record["mf_verdict"] = verdict
    if not a.skip_mo:
        import sweep_algorithms_mo as mo

        lines, data = mo.run_mo(a, work, log)
        body += [""] + lines
        record["mo"] = data
    load1 = os.getloadavg()
    header.append(f"Load average at end: {', '.join(f'{x:.2f}' for x in load1)}; total {time.time() - started:.0f} s.")
    record["load_end"] = load1
    print("\n".join(header + [""] + body))
    if a.json:
        a.json.write_text(json.dumps(record, indent=1, default=str))
    log(f"done in {time.time() - started:.0f} s; work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
