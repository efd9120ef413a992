"""``key=value`` overrides of a sweep file: ``budget.evaluations=30``, ``+space.z=[a, b]``, ``~budget.walltime``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import yaml

from rushhpc.sweeps.config.schema import (
    ADAPT_KEYS,
    ALL_PARAM_KEYS,
    BUDGET_KEYS,
    FREE_FORM,
    REDIS_KEYS,
    TOP_KEYS,
    WORKER_KEYS,
    SweepConfigError,
    fmt,
    one_line,
    strategy_keys,
)


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
    ``[a, b]`` a list, ``{low: 0, high: 1}`` a mapping, ``null`` None).

    Example:
        >>> parse_override("budget.evaluations=30").value
        30
    """
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
            raise SweepConfigError(f"override {text!r}: the value is not valid YAML: {one_line(e)}") from None
    path = key.split(".")
    if not key or any(not p for p in path):
        raise SweepConfigError(f"override {text!r}: expected a dotted key path such as workers.n")
    return Override(op, path, value, text)


def as_overrides(items: Iterable[Any]) -> list[Override]:
    """Strings (``"a.b=1"``), Overrides, or (key, value) pairs with Python values.

    Example:
        >>> [o.text for o in as_overrides(["workers.n=2", ("budget.evaluations", 5)])]
        ['workers.n=2', 'budget.evaluations=5']
    """
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
            out.append(Override(op, path, value, f"{op if op != '=' else ''}{key}={fmt(value)}"))
    return out


_FIXED_KEYS = {(): TOP_KEYS, ("budget",): BUDGET_KEYS, ("workers",): WORKER_KEYS, ("workers", "adapt"): ADAPT_KEYS,
               ("redis",): REDIS_KEYS}


def _allowed_keys(path: Sequence[str], node: dict) -> tuple[str, ...] | None:
    """The keys a mapping at ``path`` may hold; None when free-form."""
    t = tuple(path)
    if t in FREE_FORM or (len(t) == 3 and t[0] == "space" and t[2] == "when"):
        return None
    if t in _FIXED_KEYS:
        return _FIXED_KEYS[t]
    if t == ("strategy",):
        return strategy_keys(node.get("name"))
    if t == ("space",):
        return tuple(node)  # existing parameters; + adds one
    if len(t) == 2 and t[0] == "space":
        return ALL_PARAM_KEYS
    return ()


def short_param(value: Any) -> Any:
    """A parameter's short form as its long form: a list is categorical, a scalar fixed."""
    if isinstance(value, list):
        return {"type": "categorical", "choices": value}
    if isinstance(value, dict):
        return value
    return {"type": "fixed", "value": value}


def _check_key(where: str, ov: Override, depth: int, node: Any) -> None:
    """The key at ``depth`` of the override's path exists in the schema (or ``+`` adds a parameter)."""
    key, prefix = ov.path[depth], ov.path[:depth]
    if not isinstance(node, dict):
        raise SweepConfigError(f"{where}: {'.'.join(prefix)} is not a mapping, it cannot have a key {key!r}")
    allowed = _allowed_keys(prefix, node)
    if tuple(prefix) == ("space",) and ov.op == "+" and depth == len(ov.path) - 1:
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


def _long_form(where: str, ov: Override, depth: int, child: Any) -> dict:
    """The mapping below a key that holds a short form: strategy: grid -> {name: grid}, redis: URL -> {url: URL}."""
    at = tuple(ov.path[: depth + 1])
    if child is None:
        return {}
    if isinstance(child, dict):
        return child
    if at == ("strategy",) and isinstance(child, str):
        return {"name": child}
    if at == ("redis",) and isinstance(child, str) and child not in ("embedded", "env"):
        return {"url": child}
    if at == ("budget",) and isinstance(child, int):
        return {"evaluations": child}
    if at == ("redis",):
        return {}
    if depth == 1 and at[0] == "space":
        return short_param(child)
    raise SweepConfigError(f"{where}: {'.'.join(at)} is {fmt(child)}, not a mapping")


def apply_overrides(data: dict, overrides: Sequence[Override], source: str) -> dict:
    """Apply overrides to the raw mapping; a path that the schema does not have is an error.

    Example:
        >>> apply_overrides({"budget": 10}, [parse_override("budget.walltime=1h")], "<dict>")
        {'budget': {'evaluations': 10, 'walltime': '1h'}}
    """
    data = copy.deepcopy(data)
    for ov in overrides:
        where = f"{source}: override {ov.text!r}"
        node: Any = data
        for depth, key in enumerate(ov.path):
            _check_key(where, ov, depth, node)
            if depth == len(ov.path) - 1:
                if ov.op == "~":
                    if key not in node:
                        raise SweepConfigError(f"{where}: {'.'.join(ov.path)} is not set; nothing to remove")
                    del node[key]
                else:
                    node[key] = ov.value  # a value replaces, a mapping too (set one sub-key by its path)
                break
            child = _long_form(where, ov, depth, node.get(key))
            node[key] = child
            node = child
    return data
