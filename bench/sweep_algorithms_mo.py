"""Several objectives for ``bench/sweep_algorithms.py``: hypervolume after the same number of evaluations.

ZDT1 and ZDT2 with ``N_VAR`` variables (``sweep_algorithms_functions.zdt``; pymoo's definitions), each evaluation
sleeping ``--mo-cost`` s, ``--mo-evaluations`` evaluations, ``--workers`` workers, ``--seeds`` seeds:

- rushhpc: ``python -m rushhpc sweep`` with ``metric: [f1, f2]``, ``direction: [minimize, minimize]`` and
  ``strategy: tpe`` (multi-objective TPE) or ``{name: optuna, sampler: NSGAIISampler}``;
- Optuna: N processes, ``study.optimize(n_trials=B/N)`` each, on one study in ``JournalStorage`` (file backend),
  with ``TPESampler(constant_liar=True)`` or ``NSGAIISampler`` (default options).

The hypervolume of each run's evaluations (the first B by end time, from the timing log) against the fixed
reference point ``REF`` (given to rushhpc as ``reference_point``: its ``summary.json`` must say the same);
also as a share of the true front's hypervolume. While rushhpc's sweeps take one metric only
(``rushhpc sweep --check`` refuses the file), this part prints that and skips.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import sweep_algorithms_functions as fx
import sweep_algorithms_run as rn

N_VAR = 10
REF = (1.1, 11.0)
PAIRS = (("tpe", "rushhpc tpe", "optuna MOTPE"), ("nsga2", "rushhpc NSGA-II", "optuna NSGA-II"))


def rushhpc_yaml(problem: str, sampler: str, out: Path, a: argparse.Namespace, seed: int, budget: int) -> str:
    strategy: Any = "tpe" if sampler == "tpe" else {"name": "optuna", "sampler": "NSGAIISampler"}
    cfg = {"objective": f"{fx.__file__}:{problem}", "metric": ["f1", "f2"], "direction": ["minimize", "minimize"],
           "space": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(1, N_VAR + 1)},
           "strategy": strategy, "budget": {"evaluations": budget}, "workers": {"n": a.workers},
           "redis": "embedded", "output": str(out), "seed": seed, "progress": "none", "reference_point": list(REF)}
    return json.dumps(cfg)


def rushhpc_supports_mo(work: Path, a: argparse.Namespace) -> str | None:
    """None when ``rushhpc sweep --check`` takes a two-metric file, else its first error line."""
    work.mkdir(parents=True, exist_ok=True)
    yaml = work / "check.yaml"
    yaml.write_text(rushhpc_yaml("zdt1", "tpe", work / "check-out", a, 1, 10))
    token = uuid.uuid4().hex
    res = rn.run_group([[sys.executable, "-m", "rushhpc", "sweep", str(yaml), "--check"]], rn.base_env(token, {}),
                       work, [work / "check.log"], min(time.time() + 60, a.end_by), token)
    if res["codes"] == [0]:
        return None
    return rn.tail(work / "check.log", 1) or f"exit code {res['codes']}"


def launch(tool: str, problem: str, sampler: str, a: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    run_dir = work / f"mo-{tool}-{sampler}-{problem}-{seed}"
    logdir = run_dir / "log"
    logdir.mkdir(parents=True)
    token = uuid.uuid4().hex
    env = rn.base_env(token, {fx.LOG_ENV: str(logdir), fx.COST_ENV: str(a.mo_cost)})
    budget, py = a.mo_evaluations, sys.executable
    if tool == "rushhpc":
        yaml = run_dir / "sweep.yaml"
        yaml.write_text(rushhpc_yaml(problem, sampler, run_dir / "out", a, seed, budget))
        argvs = [[py, "-m", "rushhpc", "sweep", str(yaml)]]
    else:
        import optuna
        from sweep_algorithms_peers import _journal

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = str(run_dir / "journal.log")
        optuna.create_study(study_name="mo", storage=_journal(storage), directions=["minimize", "minimize"])
        shares = [budget // a.workers + (1 if i < budget % a.workers else 0) for i in range(a.workers)]
        argvs = [[py, str(rn.HERE / "sweep_algorithms_peers.py"), "optuna-mo", json.dumps(
            {"tool": "optuna", "storage": storage, "study": "mo", "seed": seed * 1000 + i, "sampler": sampler,
             "n_var": N_VAR, "problem": problem, "cost": a.mo_cost, "n_trials": shares[i]})]
            for i in range(a.workers) if shares[i]]
    logs = [run_dir / f"proc-{i}.log" for i in range(len(argvs))]
    t0 = time.time()
    res = rn.run_group(argvs, env, run_dir, logs, min(t0 + a.grace + budget * a.mo_cost * 3, a.end_by), token)
    recs = sorted(rn.read_log(logdir), key=lambda r: r["t1"])[:budget]
    pts = [tuple(r["values"]) for r in recs]
    out = {"hv": fx.hypervolume_2d(pts, REF), "n": len(recs), "wall": res["t_end"] - t0, "codes": res["codes"],
           "errors": [rn.tail(lg) for lg, c in zip(logs, res["codes"]) if c != 0]}
    if tool == "rushhpc":  # rushhpc's own hypervolume (summary.json) must be the one computed here
        try:
            out["hv_rushhpc"] = json.loads((run_dir / "out" / "summary.json").read_text())["pareto"]["hypervolume"]
        except (OSError, ValueError, KeyError, TypeError):
            out["hv_rushhpc"] = None
    return out


def run_mo(a: argparse.Namespace, work: Path, log: Callable[[str], None]) -> tuple[list[str], dict[str, Any]]:
    """The multi-objective tables (Markdown lines) and their numbers."""
    problems = "/".join(p.upper() for p in a.problems)
    title = (f"### Several objectives: hypervolume after {a.mo_evaluations} evaluations, {problems} with {N_VAR} variables, "
             f"reference point {REF}, {a.workers} workers, {a.mo_cost:g} s per evaluation, seeds {a.seed_list}")
    why = rn.importable("optuna")
    if why:
        return [title, "", f"Skipped: optuna does not import here ({why})."], {}
    why = rushhpc_supports_mo(work / "mo-check", a)
    if why:
        line = f"rushhpc multi-objective: not on main yet (`rushhpc sweep --check` refuses `metric: [f1, f2]`: {why})"
        log(line)
        return [title, "", line + "; part skipped."], {"skipped": why}
    out = [title, "", "| problem | strategy | rushhpc HV (min-max) | Optuna HV (min-max) | true front HV | rushhpc / Optuna "
           "| wall s rushhpc / Optuna | at least equal |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    data: dict[str, Any] = {}
    skipped = []
    for problem in a.problems:
        front = fx.true_front_hypervolume(problem, REF)
        for sampler, rname, oname in PAIRS:
            rows: dict[str, list[dict[str, Any]]] = {"rushhpc": [], "optuna": []}
            for seed in a.seed_list:
                for tool in rows:
                    if time.time() + 10 > a.end_by:
                        skipped.append(f"{tool} {sampler} {problem} seed {seed}")
                        continue
                    log(f"several objectives: {tool} {sampler} on {problem}, seed {seed}")
                    r = launch(tool, problem, sampler, a, seed, work)
                    log(f"  hypervolume {r['hv']:.4f} (rushhpc's own: {r.get('hv_rushhpc', '-')}) from {r['n']} "
                        f"evaluations in {r['wall']:.1f} s"
                        + (f"; errors: {r['errors'][0]}" if r["errors"] else ""))
                    rows[tool].append(r)
            if not rows["rushhpc"] or not rows["optuna"]:
                continue
            hr = statistics.median(r["hv"] for r in rows["rushhpc"])
            ho = statistics.median(r["hv"] for r in rows["optuna"])
            wr = statistics.median(r["wall"] for r in rows["rushhpc"])
            wo = statistics.median(r["wall"] for r in rows["optuna"])

            def span(rs: list[dict[str, Any]]) -> str:
                return f"{min(r['hv'] for r in rs):.3f}-{max(r['hv'] for r in rs):.3f}"

            out.append(f"| {problem} | {rname} vs {oname} | {hr:.3f} ({span(rows['rushhpc'])}) | {ho:.3f} "
                       f"({span(rows['optuna'])}) | {front:.3f} | {hr / ho:.3f} | {wr:.1f} / {wo:.1f} | "
                       f"**{'met' if hr >= ho else 'missed'}** |")
            differ = [(r["hv"], r["hv_rushhpc"]) for r in rows["rushhpc"]
                      if r.get("hv_rushhpc") is None or abs(r["hv"] - r["hv_rushhpc"]) > 1e-9 * max(1.0, r["hv"])]
            if differ:
                out.append(f"| | (rushhpc's summary.json hypervolume differs from this one's: {differ}) | | | | | | |")
            short = [r["n"] for r in rows["rushhpc"] + rows["optuna"] if r["n"] < a.mo_evaluations]
            if short:
                out.append(f"| | (some runs ended with fewer evaluations: {short}) | | | | | | |")
            data[f"{problem}-{sampler}"] = rows
    if skipped:
        out += ["", f"Not run (they could not end within --time-limit {a.time_limit:g} s): {', '.join(skipped)}."]
    return out, data
