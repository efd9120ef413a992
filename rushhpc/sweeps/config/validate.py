"""Validation of a whole sweep file, one small function per section; the result is a `SweepConfig`.

Each check's message is what a user of the YAML reads: the file, the key path, what was expected.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

from rushhpc import defaults
from rushhpc.sweeps import strategies
from rushhpc.sweeps.config.checker import Checker
from rushhpc.sweeps.config.objectives import check_objectives, objectives
from rushhpc.sweeps.config.params import validate_space
from rushhpc.sweeps.config.schema import (
    ADAPT_KEYS,
    BUDGET_KEYS,
    DEFAULTS,
    FIDELITY_KEYS,
    LAUNCHERS,
    PROGRESS,
    REDIS_KEYS,
    TOP_KEYS,
    WORKER_KEYS,
    SweepConfig,
    strategy_keys,
)


def validate(raw: dict, source: str, base_dir: Path, cwd: Path, stem: str) -> SweepConfig:
    """The raw mapping (overrides applied) checked and normalised: every default filled in.

    Example:
        >>> cfg = validate({"objective": "m:f", "space": {"x": [1, 2]}, "budget": 4}, "<dict>",
        ...                Path("."), Path("."), "sweep")  # doctest: +SKIP
    """
    c = Checker(source)
    c.mapping("", raw, TOP_KEYS)
    for key in ("objective", "space"):
        if key not in raw:
            raise c.fail(key, "missing; the sweep file needs objective, space and budget")
    out: dict[str, Any] = {}
    warnings: list[str] = []
    pythonpath = _pythonpath(c, raw.get("pythonpath"), base_dir, cwd)
    out["objective"], kind, fn = _objective(c, raw["objective"], base_dir, cwd)
    out.update(objectives(c, raw))  # metric, direction (one or several), constraints, reference_point
    out["space"] = validate_space(c, raw["space"])
    out["strategy"] = _strategy(c, raw)
    _check_strategy(c, out["strategy"], out["space"])
    out["budget"] = _budget(c, raw.get("budget"), strategies.get(out["strategy"]["name"]))
    fidelity = _fidelity(c, raw, strategies.get(out["strategy"]["name"]), kind)
    if fidelity is not None:
        out["fidelity"] = fidelity
    check_objectives(c, out)  # several metrics: no budget.target, no fidelity; a sampler that handles them
    out["timeout"] = c.opt_duration("timeout", raw.get("timeout"))
    out["retries"] = c.int_("retries", raw.get("retries", DEFAULTS["retries"]), minimum=0)
    out["max_failures"] = c.opt_int("max_failures", raw.get("max_failures"), minimum=0)
    out["workers"] = _workers(c, raw.get("workers", {}) or {}, out["strategy"]["name"])
    out["redis"] = _redis(c, raw.get("redis", DEFAULTS["redis"]))
    launcher = out["workers"]["launcher"]
    if out["redis"] == "embedded" and launcher in ("slurm", "pbs", "submitit", "ssh"):
        warnings.append(
            f"redis: embedded listens on 127.0.0.1 only: {launcher} workers on other hosts cannot "
            "reach it (set redis: {url: ..., password_file: ...})"
        )
    out["output"] = _output(c, raw.get("output", f"{defaults.SWEEP_OUTPUT_DIR}/{stem}"), cwd)
    seed = raw.get("seed")
    chosen = seed is None
    out["seed"] = secrets.randbelow(2**31) if chosen else c.int_("seed", seed, minimum=0)
    out["name"] = _name(c, raw.get("name"), out["output"])
    out["progress"] = c.choice("progress", raw.get("progress", DEFAULTS["progress"]), PROGRESS)
    out["progress_interval"] = c.duration("progress_interval", raw.get("progress_interval", DEFAULTS["progress_interval"]))
    out["pythonpath"] = pythonpath
    data = {k: out[k] for k in TOP_KEYS if k in out}
    return SweepConfig(data=data, source=source, base_dir=base_dir, cwd=cwd, objective_kind=kind,
                       seed_was_chosen=chosen, warnings=warnings, objective_fn=fn)


def _pythonpath(c: Checker, value: Any, base_dir: Path, cwd: Path) -> list[str]:
    """Folders the workers import the objective from: the file's folder (and the current one) by default."""
    if value is None:
        return [str(base_dir)] + ([str(cwd)] if cwd != base_dir else [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise c.fail("pythonpath", "expected a folder or a list of folders", value)
    out = []
    for p in value:
        q = Path(p).expanduser()
        out.append(str(q if q.is_absolute() else (base_dir / q).resolve()))
    return out


def _objective(c: Checker, value: Any, base_dir: Path, cwd: Path) -> tuple[Any, str, Any]:
    """The objective as stored in config.yaml, its kind (module, file, callable, command), the function if passed."""
    if isinstance(value, dict):  # a program: {command: ..., result: ..., env: ..., shell: ..., cwd: ...}
        from rushhpc.worker.command import CommandSpec, CommandSpecError

        try:
            CommandSpec.from_mapping(value, "objective")
        except CommandSpecError as e:
            raise c.fail(e.key, str(e)[len(e.key) + 2:]) from None
        return dict(value), "command", None
    fn = value if callable(value) else None  # Python only: a function itself
    obj = c.string("objective", value) if fn is None else "python:function"
    target, sep, func = obj.rpartition(":")
    if fn is None and (not sep or not target.strip() or not func.strip() or not func.isidentifier()):
        raise c.fail("objective", "expected module:function, path/to/file.py:function, or a program "
                     "({command: ./sim -T {T}})", obj)
    if fn is not None:
        return f"{getattr(fn, '__module__', None) or '?'}:{getattr(fn, '__qualname__', type(fn).__name__)}", "callable", fn
    if target.endswith(".py") or "/" in target or os.sep in target:
        p = Path(target).expanduser()
        candidates = [p] if p.is_absolute() else [base_dir / p, cwd / p]
        found = next((q for q in candidates if q.is_file()), None)
        if found is None:
            tried = " and ".join(str(q) for q in candidates)
            raise c.fail("objective", f"file {target} not found (looked at {tried})")
        return f"{found.resolve()}:{func}", "file", None
    return f"{target}:{func}", "module", None


def _strategy(c: Checker, raw: dict) -> dict[str, Any]:
    """``strategy:`` as a mapping: its name and its options, validated by the strategy (`rushhpc.sweeps.strategies`)."""
    strat = raw.get("strategy", DEFAULTS["strategy"])
    if isinstance(strat, str):
        strat = {"name": strat}
    names = strategies.names()
    if not isinstance(strat, dict):
        raise c.fail("strategy", f"expected one of {', '.join(names)}, or a mapping with name", strat)
    sname = strat.get("name")
    if sname not in names:
        raise c.fail("strategy" if "name" not in strat or raw.get("strategy") == sname else "strategy.name",
                     f"expected one of {', '.join(names)}", sname)
    c.mapping("strategy", strat, strategy_keys(sname))
    return {"name": sname, **strategies.get(sname).options(c, strat)}


def _check_strategy(c: Checker, s: dict[str, Any], space: dict) -> None:
    """Its dependency is installed here (the install hint otherwise), then its own checks (grid size, sampler)."""
    strategy = strategies.get(s["name"])
    missing = strategy.missing_dependency()
    if missing:
        raise c.fail("strategy", missing)
    strategy.check(c, s, space)


def _fidelity(c: Checker, raw: dict, strategy: strategies.Strategy, kind: str) -> dict[str, Any] | None:
    """``fidelity: {name, min, max}``: the objective's argument that receives it, integers 1 <= min < max."""
    f = raw.get("fidelity")
    if not strategy.needs_fidelity:
        if f is not None:
            raise c.fail("fidelity", f"only for a strategy that uses it (asha, hyperband), not {strategy.name}", f)
        return None
    if f is None:
        raise c.fail("fidelity", f"missing; {strategy.name} needs fidelity: {{name: epochs, min: 1, max: 27}}")
    c.mapping("fidelity", f, FIDELITY_KEYS)
    for key in FIDELITY_KEYS:
        if key not in f:
            raise c.fail(f"fidelity.{key}", "missing; fidelity needs name, min and max")
    name = c.string("fidelity.name", f["name"])
    low = c.int_("fidelity.min", f["min"], minimum=1)
    high = c.int_("fidelity.max", f["max"], minimum=1)
    if high <= low:
        raise c.fail("fidelity.max", f"an integer above fidelity.min ({low})", high)
    b = raw.get("budget")
    if isinstance(b, dict) and isinstance(b.get("fidelity"), (int, float)) and 0 < b["fidelity"] < low:
        raise c.fail("budget.fidelity", f"at least fidelity.min ({low}): no evaluation would fit", b["fidelity"])
    space = raw.get("space") or {}
    if name in space or name == "checkpoint_dir":
        raise c.fail("fidelity.name", "a name that is not a parameter of the space nor checkpoint_dir", name)
    return {"name": name, "min": low, "max": high}


def _budget(c: Checker, budget: Any, strategy: strategies.Strategy) -> dict[str, Any]:
    if isinstance(budget, int) and not isinstance(budget, bool):
        budget = {"evaluations": budget}
    if budget is None:
        budget = {}
    c.mapping("budget", budget, BUDGET_KEYS, "a mapping with evaluations, walltime and/or target")
    b = {
        "evaluations": c.opt_int("budget.evaluations", budget.get("evaluations"), minimum=1),
        "walltime": c.opt_duration("budget.walltime", budget.get("walltime")),
        "target": c.opt_float("budget.target", budget.get("target")),
    }
    if "fidelity" in budget or strategy.needs_fidelity:  # asha, hyperband: the sum of the fidelity claimed
        if not strategy.needs_fidelity:
            raise c.fail("budget.fidelity", f"only for a strategy with a fidelity (asha, hyperband), not {strategy.name}",
                         budget["fidelity"])
        b["fidelity"] = c.opt_float("budget.fidelity", budget.get("fidelity"), positive=True)
    if strategy.needs_evaluations and b["evaluations"] is None:
        raise c.fail("budget.evaluations", strategy.needs_evaluations)
    if not strategy.finite and b["evaluations"] is None and b["walltime"] is None and b.get("fidelity") is None:
        raise c.fail("budget", "needs evaluations or walltime (or both; target stops earlier when reached)", budget or None)
    return b


def _workers(c: Checker, w: Any, strategy: str) -> dict[str, Any]:
    c.mapping("workers", w, WORKER_KEYS)
    workers: dict[str, Any] = {}
    workers["n"] = c.int_("workers.n", w.get("n", DEFAULTS["workers.n"]), minimum=1)
    workers["adapt"] = None
    if w.get("adapt") is not None:
        workers["adapt"] = _adapt(c, w, strategy)
        workers["n"] = workers["adapt"]["max"]
    workers["launcher"] = c.choice("workers.launcher", w.get("launcher", DEFAULTS["workers.launcher"]), LAUNCHERS)
    workers["resources"] = _resources(c, w.get("resources", {}) or {}, workers["launcher"])
    # each worker's own GPUs: CUDA_VISIBLE_DEVICES split into disjoint shares (local), --gpus-per-task (srun)
    workers["gpus_per_worker"] = c.opt_int("workers.gpus_per_worker", w.get("gpus_per_worker"), minimum=1)
    workers["heartbeat_period"] = c.opt_duration("workers.heartbeat_period", w.get("heartbeat_period"))
    workers["heartbeat_expire"] = c.opt_duration("workers.heartbeat_expire", w.get("heartbeat_expire"))
    hp, he = workers["heartbeat_period"], workers["heartbeat_expire"]
    if hp is not None and he is not None and he <= hp:
        raise c.fail("workers.heartbeat_expire", f"expected more than heartbeat_period ({hp:g} s), ideally 3x", he)
    workers["restarts"] = c.int_("workers.restarts", w.get("restarts", workers["n"]), minimum=0)
    workers["start_timeout"] = c.duration("workers.start_timeout",
                                          w.get("start_timeout", DEFAULTS["workers.start_timeout"]))
    workers["stop_grace"] = c.duration("workers.stop_grace", w.get("stop_grace", DEFAULTS["workers.stop_grace"]),
                                       positive=False)
    return workers


def _adapt(c: Checker, w: dict, strategy: str) -> dict[str, Any]:
    """``workers.adapt``: min and max workers following a design strategy's queue."""
    a = c.mapping("workers.adapt", w["adapt"], ADAPT_KEYS)
    if "n" in w:
        raise c.fail("workers.n", "give either workers.n (a fixed number) or workers.adapt (min and max), "
                     "not both", w["n"])
    if not strategies.is_design(strategy):
        raise c.fail("workers.adapt", f"adapting follows the queue of a design strategy "
                     f"({', '.join(strategies.design_names())}); {strategy} workers propose their own "
                     "points: use workers.n", w["adapt"])
    if "max" not in a:
        raise c.fail("workers.adapt.max", "expected the largest number of workers (a positive integer)")
    amax = c.int_("workers.adapt.max", a["max"], minimum=1)
    amin = c.int_("workers.adapt.min", a.get("min", DEFAULTS["workers.adapt.min"]), minimum=0)
    if amin > amax:
        raise c.fail("workers.adapt.min", f"expected at most workers.adapt.max ({amax})", amin)
    return {"min": amin, "max": amax,
            "idle_timeout": c.duration("workers.adapt.idle_timeout",
                                       a.get("idle_timeout", DEFAULTS["workers.adapt.idle_timeout"])),
            "backlog": c.opt_int("workers.adapt.backlog", a.get("backlog"), minimum=1)}


def _resources(c: Checker, res: Any, launcher: str) -> dict:
    """``workers.resources``: the launcher's options, free-form but for the memory retry's keys."""
    if not isinstance(res, dict) or not all(isinstance(k, str) for k in res):
        raise c.fail("workers.resources", "expected a mapping of launcher options (see docs/launchers/)", res)
    try:  # a job killed for its memory retried with more (rushhpc.core.memory): checked here, in the YAML's words
        from rushhpc.core.memory import MemorySpecError, memory_retry

        if memory_retry(res, launcher) is not None and launcher not in ("slurm", "pbs"):
            raise c.fail("workers.resources.mem_retry", f"retries a batch job killed for its memory: launcher slurm "
                         f"or pbs, not {launcher}", res["mem_retry"])
    except MemorySpecError as e:
        raise c.fail(f"workers.resources.{e.key}", e.message) from None
    return res


def _redis(c: Checker, value: Any) -> Any:
    if value in ("embedded", "env"):
        return value
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, dict):
        raise c.fail("redis", "expected embedded, env, a redis:// URL, or a mapping with url and password_file", value)
    if "password" in value:
        raise c.fail("redis.password", "passwords do not go in a sweep file (it is copied to the output folder); "
                     "use redis.password_file: a 0600 file holding the password")
    c.mapping("redis", value, REDIS_KEYS, "a mapping with url, host, port, db, username, password_file, tls")
    out: dict[str, Any] = {}
    if "url" in value:
        out["url"] = _redis_url(c, value["url"])
    if "host" in value:
        out["host"] = c.string("redis.host", value["host"])
    if "port" in value:
        out["port"] = c.int_("redis.port", value["port"], minimum=1)
    if "db" in value:
        out["db"] = c.int_("redis.db", value["db"], minimum=0)
    if "username" in value:
        out["username"] = c.string("redis.username", value["username"])
    if "tls" in value:
        out["tls"] = c.bool_("redis.tls", value["tls"])
    if "password_file" in value:
        pf = c.string("redis.password_file", value["password_file"])
        p = Path(pf).expanduser()
        if not p.is_file():
            raise c.fail("redis.password_file", "no such file", pf)
        out["password_file"] = str(p.resolve())
    if "url" not in out and "host" not in out:
        raise c.fail("redis", "expected url or host")
    return out


def _redis_url(c: Checker, value: Any) -> str:
    from urllib.parse import urlparse

    url = c.string("redis.url", value)
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss"):
        raise c.fail("redis.url", "expected a redis:// or rediss:// URL", url)
    if u.password:
        raise c.fail("redis.url", "the URL holds a password; put it in redis.password_file (0600) and "
                     "leave it out of the URL")
    return url


def _output(c: Checker, output: Any, cwd: Path) -> str:
    c.string("output", output)
    op = Path(output).expanduser()
    return str(op if op.is_absolute() else (cwd / op).resolve())


def _name(c: Checker, name: Any, output: str) -> str:
    """The sweep's name (its networks' prefix): from the output folder when not given."""
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(output).name).strip("-._") or "sweep"
    else:
        c.string("name", name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name):
            raise c.fail("name", "expected letters, digits, '.', '_' or '-' (at most 81), starting with a letter or digit", name)
    return name[:defaults.SWEEP_NAME_CHARS]
