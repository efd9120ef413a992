"""What the dashboard derives from a sweep's finished tasks: flat rows for the best-so-far plot, and each
configuration's curve over fidelity (asha, hyperband).

A sweep's worker stores a task's parameters under ``xs["params"]`` and its outputs under ``ys["outputs"]``
(with ``value``, ``runtime``, ``attempts`` beside them), and an asha or hyperband claim puts ``config``,
``rung``, ``fidelity``, ``cost`` (and ``bracket``) in its ``xs_extra`` (`rushhpc/store/lua/asha_claim.lua`).
`NetworkData` reads those as flat rows where ``params`` and ``outputs`` are dicts; the functions here lift
them into columns and group them by configuration. Pure functions: no Redis.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

SWEEP_YS = ("value", "runtime", "attempts")  # what a sweep's worker stores beside "outputs"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def sweep_metrics(sweep: dict[str, Any] | None) -> list[str]:
    """The metric names of a sweep record (``metric: "a,b"`` for several); [] when it names none.

    Example:
        >>> sweep_metrics({"metric": "error,latency"}), sweep_metrics(None)
        (['error', 'latency'], [])
    """
    return [m for m in str((sweep or {}).get("metric") or "").split(",") if m]


def lift_outputs(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with a sweep's nested ``params`` and ``outputs`` as columns (an output wins over a column of the same
    name, a parameter does not), and the output names (the outputs', then ``value``, ``runtime``, ``attempts``).
    Rows of other networks come back as they are, with no names.

    Example:
        >>> lift_outputs([{"params": {"x": 1}, "outputs": {"loss": 0.5}, "value": 0.5, "rung": 0}])
        ([{'value': 0.5, 'rung': 0, 'x': 1, 'loss': 0.5}], ['loss', 'value'])
    """
    if not any(isinstance(r.get("outputs"), dict) for r in rows):
        return list(rows), []
    names: dict[str, None] = {}
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if k not in ("params", "outputs")}
        params = r.get("params")
        for k, v in (params.items() if isinstance(params, dict) else ()):
            flat.setdefault(str(k), v)
        outputs = r.get("outputs")
        for k, v in (outputs.items() if isinstance(outputs, dict) else ()):
            flat[str(k)] = v
            names.setdefault(str(k), None)
        out.append(flat)
    for k in SWEEP_YS:
        if any(k in r for r in rows):
            names.setdefault(k, None)
    return out, list(names)


def _value(row: dict[str, Any], metric: str | None) -> float | None:
    outputs = row.get("outputs")
    if metric and isinstance(outputs, dict) and _number(outputs.get(metric)):
        return float(outputs[metric])
    if metric and _number(row.get(metric)):
        return float(row[metric])
    return float(row["value"]) if _number(row.get("value")) else None


def fidelity_curves(rows: Sequence[dict[str, Any]], sweep: dict[str, Any] | None) -> dict[str, Any]:
    """Each configuration's metric over fidelity, for the finished tasks of a sweep whose tasks carry a fidelity
    (``config`` and ``fidelity`` columns: asha, hyperband), as `rushhpc plot`'s ``curves_over_fidelity.png``.

    ``curves``: one per configuration with a finished value (``config``, ``rung``: the highest rung it reached,
    ``bracket``, ``points``: ``[fidelity, value]`` by fidelity), highest rung last. ``rungs``: per rung its
    ``fidelity``, ``configs`` (configurations with a finished value at that rung: results.csv's finished rows of
    that rung) and ``reached`` (configurations whose highest rung it is). ``fidelity`` is False for other
    networks' tasks.

    Example:
        >>> d = fidelity_curves([{"config": "a", "rung": 0, "fidelity": 1, "outputs": {"loss": 3.0}},
        ...                      {"config": "a", "rung": 1, "fidelity": 3, "outputs": {"loss": 2.0}},
        ...                      {"config": "b", "rung": 0, "fidelity": 1, "outputs": {"loss": 4.0}}],
        ...                     {"metric": "loss", "direction": "minimize"})
        >>> [c["points"] for c in d["curves"]], [(r["rung"], r["configs"], r["reached"]) for r in d["rungs"]]
        ([[[1.0, 4.0]], [[1.0, 3.0], [3.0, 2.0]]], [(0, 2, 1), (1, 1, 1)])
    """
    if not any(r.get("config") is not None and r.get("fidelity") is not None for r in rows):
        return {"fidelity": False}
    metrics = sweep_metrics(sweep)
    metric = metrics[0] if metrics else None
    direction = str((sweep or {}).get("direction") or "minimize").split(",")[0]
    curves: dict[str, dict[str, Any]] = {}
    fids: dict[int, float] = {}
    n_eval = 0
    for r in rows:
        if r.get("config") is None or not _number(r.get("fidelity")):
            continue
        rung = int(r["rung"]) if _number(r.get("rung")) else 0
        fids.setdefault(rung, float(r["fidelity"]))
        v = _value(r, metric)
        if v is None:
            continue
        n_eval += 1
        c = curves.setdefault(str(r["config"]), {"config": str(r["config"]), "rung": rung, "bracket": r.get("bracket"),
                                                 "points": [], "rungs": set()})
        c["points"].append([float(r["fidelity"]), v])
        c["rungs"].add(rung)
        c["rung"] = max(c["rung"], rung)
    rungs = [{"rung": k, "fidelity": fids[k], "configs": sum(k in c["rungs"] for c in curves.values()),
              "reached": sum(c["rung"] == k for c in curves.values())} for k in sorted(fids)]
    out = []
    for c in sorted(curves.values(), key=lambda c: (c["rung"], c["config"])):
        c["points"].sort()
        del c["rungs"]
        out.append(c)
    return {"fidelity": True, "metric": metric or "value", "several_metrics": len(metrics) > 1,
            "direction": direction, "hyperband": any(c["bracket"] is not None for c in out), "rungs": rungs,
            "curves": out, "n_configs": len(out), "n_evaluations": n_eval, "n_finished": len(rows)}


__all__ = ["fidelity_curves", "lift_outputs", "sweep_metrics"]
