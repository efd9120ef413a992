"""The sweep file's objectives: ``metric`` and ``direction`` (one, or several), ``constraints`` and
``reference_point``, and what several metrics rule out (``budget.target``, a strategy with a fidelity,
an Optuna sampler that handles one objective only).

One metric is normalised as before (``metric: y``, ``direction: minimize``: strings); a list of one
metric becomes that string. Several metrics are a list, and ``direction`` a list of the same length
(one direction string applies to every metric).

Example:
    >>> from rushhpc.sweeps.config.checker import Checker
    >>> objectives(Checker("s.yaml"), {"metric": ["error", "latency"], "direction": "minimize"})
    {'metric': ['error', 'latency'], 'direction': ['minimize', 'minimize']}
"""

from __future__ import annotations

from typing import Any

from rushhpc.sweeps import strategies
from rushhpc.sweeps.config.checker import Checker, number
from rushhpc.sweeps.config.schema import DEFAULTS

DIRECTIONS = ("minimize", "maximize")
BOUND_KEYS = ("min", "max")
# Optuna samplers that handle several objectives (checked in Optuna 5.1: CmaEsSampler refuses them;
# GPSampler needs torch); those that read the trials' constraint values (a constraints_func argument).
MULTI_OBJECTIVE_SAMPLERS = ("TPESampler", "NSGAIISampler", "NSGAIIISampler", "GPSampler", "RandomSampler",
                            "QMCSampler", "GridSampler", "BruteForceSampler")


def metrics_of(data: dict[str, Any]) -> list[str]:
    """The sweep's metrics as a list (one or several), from a validated config's data.

    Example:
        >>> metrics_of({"metric": "y"}), metrics_of({"metric": ["a", "b"]})
        (['y'], ['a', 'b'])
    """
    m = data["metric"]
    return [m] if isinstance(m, str) else list(m)


def directions_of(data: dict[str, Any]) -> list[str]:
    """The sweep's directions as a list, one per metric.

    Example:
        >>> directions_of({"metric": ["a", "b"], "direction": "maximize"})
        ['maximize', 'maximize']
    """
    d = data["direction"]
    return [d] * len(metrics_of(data)) if isinstance(d, str) else list(d)


def is_multi(data: dict[str, Any]) -> bool:
    """Whether the sweep has several metrics.

    Example:
        >>> is_multi({"metric": "y"}), is_multi({"metric": ["a", "b"]})
        (False, True)
    """
    return not isinstance(data["metric"], str)


def objectives(c: Checker, raw: dict[str, Any]) -> dict[str, Any]:
    """``metric`` and ``direction`` normalised; ``constraints`` and ``reference_point`` when given."""
    metric = raw.get("metric", DEFAULTS["metric"])
    direction = raw.get("direction", DEFAULTS["direction"])
    out: dict[str, Any] = {}
    if isinstance(metric, list):
        if not metric:
            raise c.fail("metric", "expected an output name or a list of output names", metric)
        names = [c.string(f"metric[{i}]", m) for i, m in enumerate(metric)]
        for i, m in enumerate(names):
            if m in names[:i]:
                raise c.fail("metric", f"{m!r} is listed twice; each metric once", metric)
            if len(names) > 1 and "," in m:
                raise c.fail(f"metric[{i}]", "a name without ',' (several metrics are shown joined by ',')", m)
    else:
        names = [c.string("metric", metric)]
    if isinstance(direction, list):
        dirs = [c.choice(f"direction[{i}]", d, DIRECTIONS) for i, d in enumerate(direction)]
        if len(dirs) != len(names):
            raise c.fail("direction", f"{len(dirs)} directions for {len(names)} metric(s) ({', '.join(names)}); "
                         "give one direction per metric, or one direction for all", direction)
    else:
        dirs = [c.choice("direction", direction, DIRECTIONS)] * len(names)
    if len(names) == 1:
        out["metric"], out["direction"] = names[0], dirs[0]
    else:
        out["metric"], out["direction"] = names, dirs
    if raw.get("constraints") is not None:
        out["constraints"] = _constraints(c, raw["constraints"])
    if raw.get("reference_point") is not None:
        out["reference_point"] = _reference_point(c, raw["reference_point"], names)
    return out


def _constraints(c: Checker, value: Any) -> dict[str, dict[str, float]]:
    """``constraints: {output: {min: a, max: b}}``: at least one bound each, numbers, min <= max."""
    if not isinstance(value, dict) or not value:
        raise c.fail("constraints", "expected a mapping of outputs to bounds, e.g. {memory_gb: {max: 16}}", value)
    out: dict[str, dict[str, float]] = {}
    for name, bounds in value.items():
        if not isinstance(name, str) or not name.strip():
            raise c.fail("constraints", "keys must be output names", name)
        path = f"constraints.{name}"
        if not isinstance(bounds, dict):
            raise c.fail(path, "expected a mapping with min and/or max, e.g. {max: 16}", bounds)
        c.mapping(path, bounds, BOUND_KEYS, "a mapping with min and/or max")
        got = {k: c.float_(f"{path}.{k}", bounds[k]) for k in BOUND_KEYS if bounds.get(k) is not None}
        if not got:
            raise c.fail(path, "needs min and/or max (the bounds the output must stay within)", bounds)
        if "min" in got and "max" in got and got["min"] > got["max"]:
            raise c.fail(f"{path}.min", f"expected at most {path}.max ({got['max']:g})", bounds["min"])
        out[name] = got
    return out


def _reference_point(c: Checker, value: Any, names: list[str]) -> list[float]:
    if len(names) < 2:
        raise c.fail("reference_point", "only with several metrics (metric: [a, b]): the hypervolume's "
                     "reference point", value)
    if not isinstance(value, list) or len(value) != len(names):
        raise c.fail("reference_point", f"expected a list of {len(names)} numbers, one per metric "
                     f"({', '.join(names)})", value)
    out = []
    for i, v in enumerate(value):
        if number(v) is None:
            raise c.fail(f"reference_point[{i}]", f"expected a number (the reference value of {names[i]})", v)
        out.append(c.float_(f"reference_point[{i}]", v))
    return out


def check_objectives(c: Checker, out: dict[str, Any]) -> None:
    """What several metrics or constraints rule out, once strategy and budget are validated: raises the
    sweep's error naming the key (``budget.target``, ``metric``, ``constraints``, ``strategy.sampler``).

    Example:
        >>> check_objectives(Checker("s.yaml"), {"metric": ["a", "b"], "strategy": {"name": "random"},
        ...                                      "budget": {"target": 0.1}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        rushhpc.sweeps.config.schema.SweepConfigError: s.yaml: budget.target: stops at a value of one metric; ...
    """
    strategy = strategies.get(out["strategy"]["name"])
    multi = not isinstance(out["metric"], str)
    if multi and out["budget"].get("target") is not None:
        raise c.fail("budget.target", "stops at a value of one metric; with several metrics (metric: "
                     f"[{', '.join(out['metric'])}]) leave it out and use budget.evaluations or budget.walltime",
                     out["budget"]["target"])
    if multi and (strategy.needs_fidelity or strategy.loop is not None):
        raise c.fail("metric", f"several metrics are not supported by strategy {strategy.name} (its promotions "
                     "rank one metric); use one metric, or a design (random, sobol, ...), tpe or optuna strategy",
                     out["metric"])
    if out.get("constraints") and (strategy.needs_fidelity or strategy.loop is not None):
        raise c.fail("constraints", f"not supported by strategy {strategy.name} (its promotions rank one metric "
                     "and ignore them); leave constraints out, or use a design (random, sobol, ...), tpe or optuna "
                     "strategy", out["constraints"])
    if strategy.kind != strategies.MODEL or strategy.name not in ("tpe", "optuna"):
        return
    from rushhpc.sweeps.strategies._optuna import sampler_class

    cls = sampler_class(out["strategy"])
    name = cls.__name__
    path = "strategy.sampler" if strategy.name == "optuna" else "strategy"
    if multi and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise c.fail(path, f"{name} optimises one metric; with several metrics use one of "
                     f"{', '.join(MULTI_OBJECTIVE_SAMPLERS)}", name)
    if out.get("constraints") and not takes_constraints(cls):
        raise c.fail(path, f"{name} does not use constraints (constraints: {', '.join(out['constraints'])}); use "
                     "TPESampler, NSGAIISampler, NSGAIIISampler or GPSampler, or a design strategy (random, sobol, "
                     "...), whose points ignore them; feasibility is marked in the results either way", name)


def takes_constraints(cls: Any) -> bool:
    """Whether an Optuna sampler class reads the trials' constraint values (it has ``constraints_func``).

    Example:
        >>> import optuna  # doctest: +SKIP
        >>> takes_constraints(optuna.samplers.NSGAIISampler), takes_constraints(optuna.samplers.RandomSampler)  # doctest: +SKIP
        (True, False)
    """
    import inspect

    try:
        return "constraints_func" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
