"""The ``space:`` section: each parameter's definition, then the conditions (``when``) between them."""

from __future__ import annotations

from typing import Any

from rushhpc.sweeps.config.checker import Checker, int_like, is_scalar
from rushhpc.sweeps.config.overrides import short_param
from rushhpc.sweeps.config.schema import PARAM_KEYS, PARAM_TYPES, fmt


def validate_space(c: Checker, space: Any) -> dict[str, dict[str, Any]]:
    """Every parameter normalised (defaults filled in), in the file's order; conditions checked."""
    if not isinstance(space, dict):
        raise c.fail("space", "expected a mapping of parameter name -> definition", space)
    if not space:
        raise c.fail("space", "is empty; define at least one parameter, e.g. x: {type: float, low: 0, high: 1}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in space.items():
        if not isinstance(name, str) or not name:
            raise c.fail("space", "parameter names must be non-empty strings", name)
        out[name] = _param(c, f"space.{name}", short_param(spec))
    _check_conditions(c, out)
    _order(c, out)
    return out


def _param(c: Checker, path: str, spec: dict) -> dict[str, Any]:
    if "type" not in spec:
        raise c.fail(f"{path}.type", f"missing; expected one of {', '.join(PARAM_TYPES)}")
    ptype = spec["type"]
    if ptype not in PARAM_TYPES:
        raise c.fail(f"{path}.type", f"expected one of {', '.join(PARAM_TYPES)}", ptype)
    c.mapping(path, spec, PARAM_KEYS[ptype])
    p: dict[str, Any] = {"type": ptype}
    if ptype in ("float", "int"):
        p.update(_numeric(c, path, ptype, spec))
    elif ptype == "categorical":
        p["choices"] = _choices(c, path, spec.get("choices"))
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
    return p


def _numeric(c: Checker, path: str, ptype: str, spec: dict) -> dict[str, Any]:
    """low, high, log, step and resolution of a float or int parameter."""
    for key in ("low", "high"):
        if key not in spec:
            raise c.fail(f"{path}.{key}", f"missing; a {ptype} parameter needs low and high")
    low: float
    high: float
    if ptype == "int":
        low = c.int_(f"{path}.low", int_like(spec["low"]))
        high = c.int_(f"{path}.high", int_like(spec["high"]))
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
    step = _step(c, path, ptype, spec.get("step"), log, high - low)
    return {"low": low, "high": high, "log": log, "step": step,
            "resolution": c.opt_int(f"{path}.resolution", spec.get("resolution"), minimum=2)}


def _step(c: Checker, path: str, ptype: str, step: Any, log: bool, span: float) -> Any:
    if ptype == "int":
        step = c.int_(f"{path}.step", 1 if step is None else step, minimum=1)
        if log and step != 1:
            raise c.fail(f"{path}.step", "a log-scaled int parameter takes no step", step)
    elif step is not None:
        step = c.float_(f"{path}.step", step, positive=True)
        if log:
            raise c.fail(f"{path}.step", "a log-scaled float parameter takes no step", step)
        if step > span:
            raise c.fail(f"{path}.step", f"expected a step <= high - low ({span:g})", step)
    return step


def _choices(c: Checker, path: str, choices: Any) -> list:
    if not isinstance(choices, list) or not choices:
        raise c.fail(f"{path}.choices", "expected a non-empty list", choices)
    for i, ch in enumerate(choices):
        if not is_scalar(ch):
            raise c.fail(f"{path}.choices[{i}]", "expected a string, number, boolean or null", ch)
    if len({_key(ch) for ch in choices}) != len(choices):
        raise c.fail(f"{path}.choices", "expected distinct choices", choices)
    return list(choices)


def _check_conditions(c: Checker, out: dict[str, dict[str, Any]]) -> None:
    """Conditions refer to parameters that exist and can be tested for equality, with values they can take."""
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
                if not is_scalar(v) or not _possible(rp, v):
                    raise c.fail(path, f"{fmt(v)} is not a value {ref} can take")


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


def _order(c: Checker, space: dict) -> list[str]:
    """Parameters in an order where each comes after those its condition tests (no cycle)."""
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
