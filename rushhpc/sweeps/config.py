"""The sweep file: read it, apply ``key=value`` overrides, validate every key, normalise.

Everything is checked before anything starts (no Redis, no worker, no output folder). An
error is one `SweepConfigError` naming the file, the key path and what was expected::

    sweep.yaml: budget.evaluations: expected a positive integer, got -3

The normalised config (`SweepConfig.data`) is itself a valid sweep file: it is what
``config.yaml`` in the output folder holds (absolute paths, durations in seconds, every
default filled in), so ``rushhpc sweep OUTPUT/config.yaml --resume`` works from anywhere.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from rushhpc.core.durations import DurationError, parse_duration
from rushhpc.errors import RushConfigError

__all__ = ["SweepConfig", "SweepConfigError", "load_config", "parse_override", "parse_duration"]


class SweepConfigError(RushConfigError):
    """A sweep file (or an override) is invalid. The message names the file, the key path and
    what was expected; the command line prints it as one line and exits with code 2."""


# ---------------------------------------------------------------------------- schema
TOP_KEYS = (
    "objective", "metric", "direction", "space", "strategy", "budget", "timeout", "retries",
    "max_failures", "workers", "redis", "output", "seed", "name", "progress", "progress_interval",
    "pythonpath",
)
BUDGET_KEYS = ("evaluations", "walltime", "target")
WORKER_KEYS = (
    "n", "adapt", "launcher", "resources", "heartbeat_period", "heartbeat_expire", "restarts", "start_timeout",
    "stop_grace", "gpus_per_worker",
)
ADAPT_KEYS = ("min", "max", "idle_timeout", "backlog")
REDIS_KEYS = ("url", "host", "port", "db", "username", "password_file", "tls")
PARAM_TYPES = ("float", "int", "categorical", "fixed")
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when", "resolution"),
    "int": ("type", "low", "high", "log", "step", "when", "resolution"),
    "categorical": ("type", "choices", "when"),
    "fixed": ("type", "value", "when"),
}
ALL_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "value", "when", "resolution")
STRATEGY_KEYS = {
    "random": ("name",),
    "grid": ("name", "resolution", "shuffle"),
    "sobol": ("name", "scramble"),
    "halton": ("name", "scramble"),
    "lhs": ("name",),
    "tpe": ("name", "n_startup_trials", "options"),
    "optuna": ("name", "sampler", "options"),
}
STRATEGIES = tuple(STRATEGY_KEYS)
DESIGN_STRATEGIES = ("random", "grid", "sobol", "halton", "lhs")  # points fixed by seed and index
MODEL_STRATEGIES = ("tpe", "optuna")  # each worker proposes from the tasks in Redis
LAUNCHERS = ("local", "srun", "slurm", "pbs", "submitit", "ssh")
PROGRESS = ("auto", "rich", "plain", "none")
MAX_GRID_POINTS = 1_000_000

# Keys whose value is free-form (no schema below them).
FREE_FORM = {("workers", "resources"), ("strategy", "options")}


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class SweepConfig:
    """A validated, normalised sweep configuration.

    ``data`` is the normalised mapping (what ``config.yaml`` holds), ``source`` names where it
    came from (a file path, or ``<dict>``), ``base_dir`` is the folder relative paths of the
    objective are resolved against (the YAML file's folder).
    """

    data: dict[str, Any]
    source: str
    base_dir: Path
    cwd: Path
    objective_kind: str = "module"  # module | file | callable
    objective_fn: Any = None  # the function itself, when a Python caller passed one (sent to workers pickled)
    seed_was_chosen: bool = False
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def strategy(self) -> str:
        return self.data["strategy"]["name"]

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return self.data["space"]

    @property
    def output(self) -> Path:
        return Path(self.data["output"])

    def fingerprint(self) -> dict[str, Any]:
        """What fixes the set of points: a resumed sweep must agree on all of it."""
        d = self.data
        fp = {"space": d["space"], "strategy": d["strategy"], "seed": d["seed"]}
        if d["strategy"]["name"] == "lhs":
            fp["evaluations"] = d["budget"]["evaluations"]
        return fp

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------- overrides
@dataclass
class Override:
    """One ``[+|~]dotted.path=value``: ``+`` adds a key (a new parameter under ``space``),
    ``~`` removes one, plain ``=`` sets an existing field of the schema."""

    op: str  # "=", "+", "~"
    path: list[str]
    value: Any
    text: str


def parse_override(text: str) -> Override:
    """``budget.evaluations=30`` -> Override; the value is read as YAML (``30`` is an int,
    ``[a, b]`` a list, ``{low: 0, high: 1}`` a mapping, ``null`` None)."""
    op = "="
    body = text
    if body.startswith("+"):
        op, body = "+", body[1:]
    elif body.startswith("~"):
        op, body = "~", body[1:]
    key, sep, raw = body.partition("=")
    key = key.strip()
    if op == "~":
        if sep and raw.strip():
            raise SweepConfigError(f"override {text!r}: ~KEY removes a key and takes no value")
        value = None
    else:
        if not sep:
            raise SweepConfigError(f"override {text!r}: expected KEY=VALUE (e.g. budget.evaluations=30)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise SweepConfigError(f"override {text!r}: the value is not valid YAML: {_one_line(e)}") from None
    path = key.split(".")
    if not key or any(not p for p in path):
        raise SweepConfigError(f"override {text!r}: expected a dotted key path such as workers.n")
    return Override(op, path, value, text)


def as_overrides(items: Iterable[Any]) -> list[Override]:
    """Strings (``"a.b=1"``), Overrides, or (key, value) pairs with Python values."""
    out = []
    for item in items or ():
        if isinstance(item, Override):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_override(item))
        else:
            key, value = item
            op = "="
            if key.startswith(("+", "~")):
                op, key = key[0], key[1:]
            path = key.split(".")
            if not key or any(not p for p in path):
                raise SweepConfigError(f"override {key!r}: expected a dotted key path such as workers.n")
            out.append(Override(op, path, value, f"{op if op != '=' else ''}{key}={_fmt(value)}"))
    return out


def _allowed_keys(path: Sequence[str], node: dict) -> tuple[str, ...] | None:
    """The keys a mapping at ``path`` may hold; None when free-form."""
    t = tuple(path)
    if t in FREE_FORM or (len(t) == 3 and t[0] == "space" and t[2] == "when"):
        return None
    if t == ():
        return TOP_KEYS
    if t == ("budget",):
        return BUDGET_KEYS
    if t == ("workers",):
        return WORKER_KEYS
    if t == ("workers", "adapt"):
        return ADAPT_KEYS
    if t == ("redis",):
        return REDIS_KEYS
    if t == ("strategy",):
        return STRATEGY_KEYS.get(str(node.get("name")), ("name",))
    if t == ("space",):
        return tuple(node)  # existing parameters; + adds one
    if len(t) == 2 and t[0] == "space":
        return ALL_PARAM_KEYS
    return ()


def apply_overrides(data: dict, overrides: Sequence[Override], source: str) -> dict:
    """Apply overrides to the raw mapping; a path that the schema does not have is an error."""
    data = copy.deepcopy(data)
    for ov in overrides:
        where = f"{source}: override {ov.text!r}"
        node: Any = data
        for depth, key in enumerate(ov.path):
            prefix = ov.path[:depth]
            last = depth == len(ov.path) - 1
            if not isinstance(node, dict):
                raise SweepConfigError(f"{where}: {'.'.join(prefix)} is not a mapping, it cannot have a key {key!r}")
            allowed = _allowed_keys(prefix, node)
            if tuple(prefix) == ("space",) and ov.op == "+" and last:
                if key in node:
                    raise SweepConfigError(f"{where}: space.{key} exists already; set it without '+'")
            elif allowed == ():
                raise SweepConfigError(f"{where}: {'.'.join(prefix)} is a value, it has no key {key!r}")
            elif allowed is not None and key not in allowed:
                what = ".".join(prefix) or "the sweep file"
                if tuple(prefix) == ("space",):
                    hint = f"parameters are {', '.join(allowed) or '(none)'}; add one with +space.{key}=..."
                else:
                    hint = f"{what} takes {', '.join(allowed)}"
                raise SweepConfigError(f"{where}: {'.'.join(ov.path[: depth + 1])} does not exist; {hint}")
            if last:
                if ov.op == "~":
                    if key not in node:
                        raise SweepConfigError(f"{where}: {'.'.join(ov.path)} is not set; nothing to remove")
                    del node[key]
                else:
                    node[key] = ov.value  # a value replaces, a mapping too (set one sub-key by its path)
                break
            child = node.get(key)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                # a short form becomes its long form: strategy: grid -> {name: grid}, redis: URL -> {url: URL}
                if tuple((*prefix, key)) == ("strategy",) and isinstance(child, str):
                    child = {"name": child}
                elif tuple((*prefix, key)) == ("redis",) and isinstance(child, str) and child not in ("embedded", "env"):
                    child = {"url": child}
                elif tuple((*prefix, key)) == ("budget",) and isinstance(child, int):
                    child = {"evaluations": child}
                elif tuple((*prefix, key)) == ("redis",):
                    child = {}
                elif len(prefix) == 1 and prefix[0] == "space":
                    child = _short_param(child)
                else:
                    raise SweepConfigError(f"{where}: {'.'.join(ov.path[: depth + 1])} is {_fmt(child)}, not a mapping")
            node[key] = child
            node = child
    return data


def _short_param(value: Any) -> Any:
    if isinstance(value, list):
        return {"type": "categorical", "choices": value}
    if isinstance(value, dict):
        return value
    return {"type": "fixed", "value": value}


# ---------------------------------------------------------------------------- values
def _number(value: Any) -> float | int | None:
    """An int or float; a numeric string (YAML reads 1e-4 as a string) is accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return int(f) if re.fullmatch(r"\s*[+-]?\d+\s*", value) else f
    return None


def _int_like(value: Any) -> Any:
    """``"10"`` -> 10 (other values unchanged, so that an error shows them as written)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------------------- validation
class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: Any = ...) -> SweepConfigError:
        msg = f"{self.source}: {path}: {expected}"
        if got is not ...:
            msg += f", got {_fmt(got)}"
        return SweepConfigError(msg)

    def mapping(self, path: str, value: Any, allowed: Sequence[str], what: str = "a mapping") -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected {what}", value)
        for k in value:
            if not isinstance(k, str):
                raise self.fail(path, "keys must be strings", k)
            if k not in allowed:
                where = f"{path}.{k}" if path else k
                raise self.fail(where, f"unknown key; {path or 'the sweep file'} takes {', '.join(allowed)}")
        return value

    def int_(self, path: str, value: Any, minimum: int | None = None, or_null: bool = False) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
                minimum, f"an integer >= {minimum}")
            raise self.fail(path, f"expected {what}" + (" or null" if or_null else ""), value)
        return value

    def opt_int(self, path: str, value: Any, minimum: int | None = None) -> int | None:
        return None if value is None else self.int_(path, value, minimum, or_null=True)

    def float_(self, path: str, value: Any, positive: bool = False, or_null: bool = False) -> float:
        v = _number(value)
        if v is None or not math.isfinite(float(v)) or (positive and v <= 0):
            raise self.fail(path, "expected " + ("a positive number" if positive else "a finite number")
                            + (" or null" if or_null else ""), value)
        return float(v)

    def opt_float(self, path: str, value: Any, positive: bool = False) -> float | None:
        return None if value is None else self.float_(path, value, positive, or_null=True)

    def bool_(self, path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false", value)
        return value

    def duration(self, path: str, value: Any, positive: bool = True) -> float:
        try:
            secs = parse_duration(value)
        except DurationError as e:
            raise self.fail(path, str(e), value) from None
        if positive and secs <= 0:
            raise self.fail(path, "expected a duration > 0", value)
        return secs

    def opt_duration(self, path: str, value: Any) -> float | None:
        return None if value is None else self.duration(path, value)

    def choice(self, path: str, value: Any, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}", value)
        return str(value)

    def string(self, path: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "expected a non-empty string", value)
        return value


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepConfigError(f"{path}: cannot read the sweep file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{path}: not valid YAML: {_one_line(e)}") from None
    if data is None:
        raise SweepConfigError(f"{path}: the sweep file is empty; it needs at least objective, space and budget")
    if not isinstance(data, dict):
        raise SweepConfigError(f"{path}: expected a mapping of sweep keys at the top, got {type(data).__name__}")
    return data


def load_config(
    source: str | os.PathLike | dict,
    overrides: Iterable[Any] = (),
    *,
    cwd: str | os.PathLike | None = None,
    check_objective: bool = True,
) -> SweepConfig:
    """Read, override and validate a sweep configuration.

    ``source`` is a YAML file or a dict; ``overrides`` are ``"dotted.key=value"`` strings (or
    (key, value) pairs). Raises `SweepConfigError` on the first problem.

    Example:
        >>> cfg = load_config("examples/sweep_branin.yaml", ["budget.evaluations=30"])
        >>> cfg["budget"]["evaluations"]
        30
    """
    cwd = Path(cwd or os.getcwd()).resolve()
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
        name = "<dict>"
        base_dir = cwd
        stem = "sweep"
    else:
        path = Path(source).expanduser()
        name = str(source)
        raw = _read_file(path)
        base_dir = (cwd / path).resolve().parent
        stem = path.stem
    try:
        parsed = as_overrides(overrides)
    except SweepConfigError as e:
        raise SweepConfigError(f"{name}: {e}") from None
    raw = apply_overrides(raw, parsed, name)
    cfg = _validate(raw, name, base_dir, cwd, stem)
    if check_objective:
        check_objective_importable(cfg)
        check_gpus(cfg)
    return cfg


def _validate(raw: dict, source: str, base_dir: Path, cwd: Path, stem: str) -> SweepConfig:
    c = _Checker(source)
    c.mapping("", raw, TOP_KEYS)
    for key in ("objective", "space"):
        if key not in raw:
            raise c.fail(key, "missing; the sweep file needs objective, space and budget")
    out: dict[str, Any] = {}
    warnings: list[str] = []

    pythonpath_raw = raw.get("pythonpath")
    if pythonpath_raw is None:
        pythonpath = [str(base_dir)] + ([str(cwd)] if cwd != base_dir else [])
    else:
        if isinstance(pythonpath_raw, str):
            pythonpath_raw = [pythonpath_raw]
        if not isinstance(pythonpath_raw, list) or not all(isinstance(p, str) and p for p in pythonpath_raw):
            raise c.fail("pythonpath", "expected a folder or a list of folders", pythonpath_raw)
        pythonpath = []
        for p in pythonpath_raw:
            q = Path(p).expanduser()
            pythonpath.append(str(q if q.is_absolute() else (base_dir / q).resolve()))
    # objective, metric, direction
    out["objective"], kind, fn = _objective(c, raw["objective"], base_dir, cwd)
    out["metric"] = c.string("metric", raw.get("metric", "y"))
    out["direction"] = c.choice("direction", raw.get("direction", "minimize"), ("minimize", "maximize"))

    # space
    out["space"] = _validate_space(c, raw["space"])

    # strategy
    strat = raw.get("strategy", "random")
    if isinstance(strat, str):
        strat = {"name": strat}
    if not isinstance(strat, dict):
        raise c.fail("strategy", f"expected one of {', '.join(STRATEGIES)}, or a mapping with name", strat)
    sname = strat.get("name")
    if sname not in STRATEGY_KEYS:
        raise c.fail("strategy" if "name" not in strat or raw.get("strategy") == sname else "strategy.name",
                     f"expected one of {', '.join(STRATEGIES)}", sname)
    c.mapping("strategy", strat, STRATEGY_KEYS[sname])
    s: dict[str, Any] = {"name": sname}
    if sname == "grid":
        s["resolution"] = c.int_("strategy.resolution", strat.get("resolution", 5), minimum=2)
        s["shuffle"] = c.bool_("strategy.shuffle", strat.get("shuffle", False))
    elif sname in ("sobol", "halton"):
        s["scramble"] = c.bool_("strategy.scramble", strat.get("scramble", True))
    elif sname == "tpe":
        s["n_startup_trials"] = c.int_("strategy.n_startup_trials", strat.get("n_startup_trials", 10), minimum=0)
        opts = strat.get("options", {}) or {}
        if not isinstance(opts, dict):
            raise c.fail("strategy.options", "expected a mapping of TPESampler arguments", opts)
        s["options"] = opts
    elif sname == "optuna":
        s["sampler"] = c.string("strategy.sampler", strat.get("sampler"))
        opts = strat.get("options", {}) or {}
        if not isinstance(opts, dict):
            raise c.fail("strategy.options", "expected a mapping of sampler arguments", opts)
        s["options"] = opts
    out["strategy"] = s
    _check_strategy_deps(c, s, out["space"])

    # budget
    budget: Any = raw.get("budget")
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
    if sname == "lhs" and b["evaluations"] is None:
        raise c.fail("budget.evaluations", "strategy lhs needs budget.evaluations (the size of the Latin hypercube)")
    if sname != "grid" and b["evaluations"] is None and b["walltime"] is None:
        raise c.fail("budget", "needs evaluations or walltime (or both; target stops earlier when reached)", budget or None)
    out["budget"] = b

    # evaluation
    out["timeout"] = c.opt_duration("timeout", raw.get("timeout"))
    out["retries"] = c.int_("retries", raw.get("retries", 0), minimum=0)
    out["max_failures"] = c.opt_int("max_failures", raw.get("max_failures"), minimum=0)

    # workers
    w = raw.get("workers", {}) or {}
    c.mapping("workers", w, WORKER_KEYS)
    workers: dict[str, Any] = {}
    workers["n"] = c.int_("workers.n", w.get("n", 1), minimum=1)
    workers["adapt"] = None
    if w.get("adapt") is not None:
        a = c.mapping("workers.adapt", w["adapt"], ADAPT_KEYS)
        if "n" in w:
            raise c.fail("workers.n", "give either workers.n (a fixed number) or workers.adapt (min and max), "
                         "not both", w["n"])
        if out["strategy"]["name"] not in DESIGN_STRATEGIES:
            raise c.fail("workers.adapt", f"adapting follows the queue of a design strategy "
                         f"({', '.join(DESIGN_STRATEGIES)}); {out['strategy']['name']} workers propose their own "
                         "points: use workers.n", w["adapt"])
        if "max" not in a:
            raise c.fail("workers.adapt.max", "expected the largest number of workers (a positive integer)")
        amax = c.int_("workers.adapt.max", a["max"], minimum=1)
        amin = c.int_("workers.adapt.min", a.get("min", 0), minimum=0)
        if amin > amax:
            raise c.fail("workers.adapt.min", f"expected at most workers.adapt.max ({amax})", amin)
        workers["adapt"] = {"min": amin, "max": amax,
                            "idle_timeout": c.duration("workers.adapt.idle_timeout", a.get("idle_timeout", 60)),
                            "backlog": c.opt_int("workers.adapt.backlog", a.get("backlog"), minimum=1)}
        workers["n"] = amax
    workers["launcher"] = c.choice("workers.launcher", w.get("launcher", "local"), LAUNCHERS)
    res = w.get("resources", {}) or {}
    if not isinstance(res, dict) or not all(isinstance(k, str) for k in res):
        raise c.fail("workers.resources", "expected a mapping of launcher options (see docs/launchers/)", res)
    workers["resources"] = res
    try:  # a job killed for its memory retried with more (rushhpc.core.memory): checked here, in the YAML's words
        from rushhpc.core.memory import MemorySpecError, memory_retry

        if memory_retry(res, workers["launcher"]) is not None and workers["launcher"] not in ("slurm", "pbs"):
            raise c.fail("workers.resources.mem_retry", f"retries a batch job killed for its memory: launcher slurm "
                         f"or pbs, not {workers['launcher']}", res["mem_retry"])
    except MemorySpecError as e:
        raise c.fail(f"workers.resources.{e.key}", e.message) from None
    # each worker's own GPUs: CUDA_VISIBLE_DEVICES split into disjoint shares (local), --gpus-per-task (srun)
    workers["gpus_per_worker"] = c.opt_int("workers.gpus_per_worker", w.get("gpus_per_worker"), minimum=1)
    workers["heartbeat_period"] = c.opt_duration("workers.heartbeat_period", w.get("heartbeat_period"))
    workers["heartbeat_expire"] = c.opt_duration("workers.heartbeat_expire", w.get("heartbeat_expire"))
    hp, he = workers["heartbeat_period"], workers["heartbeat_expire"]
    if hp is not None and he is not None and he <= hp:
        raise c.fail("workers.heartbeat_expire", f"expected more than heartbeat_period ({hp:g} s), ideally 3x", he)
    workers["restarts"] = c.int_("workers.restarts", w.get("restarts", workers["n"]), minimum=0)
    workers["start_timeout"] = c.duration("workers.start_timeout", w.get("start_timeout", 120))
    workers["stop_grace"] = c.duration("workers.stop_grace", w.get("stop_grace", 60), positive=False)
    out["workers"] = workers

    # redis
    out["redis"] = _validate_redis(c, raw.get("redis", "embedded"))
    if out["redis"] == "embedded" and workers["launcher"] in ("slurm", "pbs", "submitit", "ssh"):
        warnings.append(
            f"redis: embedded listens on 127.0.0.1 only: {workers['launcher']} workers on other hosts cannot "
            "reach it (set redis: {url: ..., password_file: ...})"
        )

    # output, seed, name, display
    output = raw.get("output", f"runs/{stem}")
    c.string("output", output)
    op = Path(output).expanduser()
    out["output"] = str(op if op.is_absolute() else (cwd / op).resolve())
    seed = raw.get("seed")
    chosen = seed is None
    out["seed"] = secrets.randbelow(2**31) if chosen else c.int_("seed", seed, minimum=0)
    name = raw.get("name")
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(out["output"]).name).strip("-._") or "sweep"
    else:
        c.string("name", name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", name):
            raise c.fail("name", "expected letters, digits, '.', '_' or '-' (at most 81), starting with a letter or digit", name)
    out["name"] = name[:60]
    out["progress"] = c.choice("progress", raw.get("progress", "auto"), PROGRESS)
    out["progress_interval"] = c.duration("progress_interval", raw.get("progress_interval", 10))
    out["pythonpath"] = pythonpath

    order = [k for k in TOP_KEYS if k in out]
    data = {k: out[k] for k in order}
    return SweepConfig(data=data, source=source, base_dir=base_dir, cwd=cwd, objective_kind=kind,
                       seed_was_chosen=chosen, warnings=warnings, objective_fn=fn)


def _objective(c: _Checker, value: Any, base_dir: Path, cwd: Path) -> tuple[Any, str, Any]:
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


def _validate_space(c: _Checker, space: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(space, dict):
        raise c.fail("space", "expected a mapping of parameter name -> definition", space)
    if not space:
        raise c.fail("space", "is empty; define at least one parameter, e.g. x: {type: float, low: 0, high: 1}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        path = f"space.{name}"
        if not isinstance(name, str) or not name:
            raise c.fail("space", "parameter names must be non-empty strings", name)
        spec = _short_param(spec)
        if "type" not in spec:
            raise c.fail(f"{path}.type", f"missing; expected one of {', '.join(PARAM_TYPES)}")
        ptype = spec["type"]
        if ptype not in PARAM_TYPES:
            raise c.fail(f"{path}.type", f"expected one of {', '.join(PARAM_TYPES)}", ptype)
        c.mapping(path, spec, PARAM_KEYS[ptype])
        p: dict[str, Any] = {"type": ptype}
        if ptype in ("float", "int"):
            for key in ("low", "high"):
                if key not in spec:
                    raise c.fail(f"{path}.{key}", f"missing; a {ptype} parameter needs low and high")
            low: float
            high: float
            if ptype == "int":
                low = c.int_(f"{path}.low", _int_like(spec["low"]))
                high = c.int_(f"{path}.high", _int_like(spec["high"]))
            else:
                low = c.float_(f"{path}.low", spec["low"])
                high = c.float_(f"{path}.high", spec["high"])
            log = c.bool_(f"{path}.log", spec.get("log", False))
            if ptype == "float" and not low < high:
                raise c.fail(f"{path}.high", f"expected high > low ({low:g}); for one value use type: fixed", spec["high"])
            if ptype == "int" and not low <= high:
                raise c.fail(f"{path}.high", f"expected high >= low ({low})", spec["high"])
            if log and low <= 0:
                raise c.fail(f"{path}.low", "expected low > 0 for a log-scaled parameter", spec["low"])
            step = spec.get("step")
            if ptype == "int":
                step = c.int_(f"{path}.step", 1 if step is None else step, minimum=1)
                if log and step != 1:
                    raise c.fail(f"{path}.step", "a log-scaled int parameter takes no step", step)
            elif step is not None:
                step = c.float_(f"{path}.step", step, positive=True)
                if log:
                    raise c.fail(f"{path}.step", "a log-scaled float parameter takes no step", step)
                if step > high - low:
                    raise c.fail(f"{path}.step", f"expected a step <= high - low ({high - low:g})", step)
            p.update(low=low, high=high, log=log, step=step)
            res = spec.get("resolution")
            p["resolution"] = c.opt_int(f"{path}.resolution", res, minimum=2)
        elif ptype == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise c.fail(f"{path}.choices", "expected a non-empty list", choices)
            for i, ch in enumerate(choices):
                if not _is_scalar(ch):
                    raise c.fail(f"{path}.choices[{i}]", "expected a string, number, boolean or null", ch)
            if len({_key(ch) for ch in choices}) != len(choices):
                raise c.fail(f"{path}.choices", "expected distinct choices", choices)
            p["choices"] = list(choices)
        else:
            if "value" not in spec:
                raise c.fail(f"{path}.value", "missing; a fixed parameter needs a value")
            p["value"] = spec["value"]
        when = spec.get("when")
        if when is not None:
            if not isinstance(when, dict) or not when:
                raise c.fail(f"{path}.when", "expected a mapping of parameter -> value (or list of values)", when)
            p["when"] = {str(k): v for k, v in when.items()}
        else:
            p["when"] = None
        out[name] = p
    # conditions refer to parameters that exist, can be tested for equality, and form no cycle
    for name, p in out.items():
        for ref, values in (p["when"] or {}).items():
            path = f"space.{name}.when.{ref}"
            if ref not in out:
                raise c.fail(path, f"refers to no parameter; parameters are {', '.join(out)}")
            if ref == name:
                raise c.fail(path, "a parameter cannot depend on itself")
            rp = out[ref]
            if rp["type"] == "float":
                raise c.fail(path, "conditions can test categorical, int or fixed parameters, not float ones")
            vals = values if isinstance(values, list) else [values]
            if not vals:
                raise c.fail(path, "expected a value or a non-empty list of values", values)
            for v in vals:
                if not _is_scalar(v) or not _possible(rp, v):
                    raise c.fail(path, f"{_fmt(v)} is not a value {ref} can take")
    _order(c, out)
    return out


def _key(v: Any) -> tuple:
    """Distinguish 1, 1.0 and True (Python's == does not)."""
    return (type(v).__name__, v)


def _possible(p: dict, v: Any) -> bool:
    if p["type"] == "categorical":
        return any(_key(v) == _key(ch) for ch in p["choices"])
    if p["type"] == "fixed":
        return _key(v) == _key(p["value"])
    if isinstance(v, bool) or not isinstance(v, int):
        return False
    return p["low"] <= v <= p["high"] and (v - p["low"]) % (p["step"] or 1) == 0


def _order(c: _Checker, space: dict) -> list[str]:
    """Parameters in an order where each comes after those its condition tests."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cyc = chain[chain.index(n):] + [n]
            raise c.fail(f"space.{n}.when", f"conditions form a cycle: {' -> '.join(cyc)}")
        state[n] = 1
        for ref in space[n]["when"] or {}:
            visit(ref, chain + [n])
        state[n] = 2
        done.append(n)

    for n in space:
        visit(n, [])
    return done


def _check_strategy_deps(c: _Checker, s: dict, space: dict) -> None:
    name = s["name"]
    import importlib.util

    if name in ("sobol", "halton", "lhs") and importlib.util.find_spec("scipy") is None:
        raise c.fail("strategy", f"{name} needs scipy: pip install 'rushhpc[sweep]'")
    if name in MODEL_STRATEGIES:
        if importlib.util.find_spec("optuna") is None:
            raise c.fail("strategy", f"{name} needs optuna: pip install 'rushhpc[tpe]'")
        if "seed" in s["options"]:
            raise c.fail("strategy.options.seed", "set the top-level seed instead")
        if name == "optuna" or s["options"]:  # importing optuna takes a while: only when there is something to check
            import optuna

            if name == "optuna":
                sampler = getattr(optuna.samplers, s["sampler"], None)
                if not (isinstance(sampler, type) and issubclass(sampler, optuna.samplers.BaseSampler)):
                    raise c.fail("strategy.sampler", "expected the name of a sampler in optuna.samplers (e.g. "
                                 "TPESampler, GPSampler, CmaEsSampler)", s["sampler"])
            cls = optuna.samplers.TPESampler if name == "tpe" else getattr(optuna.samplers, s["sampler"])
            try:
                params: Any = inspect.signature(cls).parameters
            except (TypeError, ValueError):
                params = {}
            for k in s["options"]:
                if params and k not in params:
                    raise c.fail(f"strategy.options.{k}", f"{cls.__name__} takes no argument {k!r}")
    if name == "grid":
        from rushhpc.sweeps.space import grid_size

        n = grid_size(space, s["resolution"])
        if n > MAX_GRID_POINTS:
            raise c.fail("strategy.resolution", f"the grid has {n:,} points, more than {MAX_GRID_POINTS:,}; lower "
                         "the resolution (or space.NAME.resolution), or use sobol")


def _validate_redis(c: _Checker, value: Any) -> Any:
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
        url = c.string("redis.url", value["url"])
        from urllib.parse import urlparse

        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise c.fail("redis.url", "expected a redis:// or rediss:// URL", url)
        if u.password:
            raise c.fail("redis.url", "the URL holds a password; put it in redis.password_file (0600) and "
                         "leave it out of the URL")
        out["url"] = url
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


def check_gpus(cfg: SweepConfig) -> None:
    """``workers.gpus_per_worker`` with local workers: enough GPUs visible here for ``workers.n``, before anything starts."""
    w = cfg["workers"]
    if not w.get("gpus_per_worker") or w["launcher"] != "local":
        return
    from rushhpc.launchers.gpus import GpuError, GpuPool, visible_gpus

    try:
        GpuPool(visible_gpus(), w["gpus_per_worker"]).check(w["n"])
    except GpuError as e:
        raise SweepConfigError(f"{cfg.source}: workers.gpus_per_worker: {e}") from None


def check_command(cfg: SweepConfig) -> None:
    """A command objective's placeholders name parameters, and a program given by path exists, before anything starts."""
    import shutil

    from rushhpc.worker.command import CommandSpec, CommandSpecError

    spec = CommandSpec.from_mapping(cfg["objective"], "objective")
    try:
        spec.check(cfg.space)
    except CommandSpecError as e:
        raise SweepConfigError(f"{cfg.source}: {e}") from None
    program = spec.argv_template[0] if spec.argv_template else None
    if program is None or "{" in program:
        return
    if "/" in program:
        where = cfg.base_dir if spec.cwd == "sweep" else None  # cwd: trial runs it from a folder made later
        path = Path(program).expanduser()
        path = path if path.is_absolute() or where is None else where / path
        if (path.is_absolute() or where is not None) and not path.exists():
            raise SweepConfigError(f"{cfg.source}: objective.command: {program} not found (looked at {path}; a relative "
                                   "program is found from the sweep file's folder)")
        if path.exists() and not os.access(path, os.X_OK):
            raise SweepConfigError(f"{cfg.source}: objective.command: {path} is not executable (chmod +x {path}, or "
                                   "run it through its interpreter: python3 {program} ...)")
    elif shutil.which(program) is None:
        cfg.warnings.append(f"objective.command: {program} is not on this machine's PATH; the workers must find it "
                            "on theirs")


def check_objective_importable(cfg: SweepConfig) -> Any:
    """Import the objective in this process (as the workers will) and check that it takes the
    parameters; returns the function."""
    from rushhpc.sweeps.objective import ObjectiveImportError, load_objective

    if cfg.objective_kind == "command":
        check_command(cfg)
        return None
    spec = cfg["objective"]
    try:
        fn = cfg.objective_fn or load_objective(spec, cfg["pythonpath"])
    except ObjectiveImportError as e:
        raise SweepConfigError(f"{cfg.source}: objective: {e}") from None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    params = sig.parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return fn
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty}
    missing = [n for n in cfg.space if n not in accepted]
    if missing:
        raise SweepConfigError(
            f"{cfg.source}: space.{missing[0]}: the objective {spec.rpartition(':')[2]}{sig} takes no parameter "
            f"{missing[0]!r} (add it to the function, or **kwargs)"
        )
    lacking = sorted(required - set(cfg.space))
    if lacking:
        raise SweepConfigError(
            f"{cfg.source}: space: the objective {spec.rpartition(':')[2]}{sig} needs {', '.join(lacking)}, "
            "which the space does not define (add them, e.g. as type: fixed)"
        )
    return fn

