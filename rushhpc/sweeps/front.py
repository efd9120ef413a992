"""A sweep's objectives over its records: feasibility, the Pareto front, its hypervolume, and the files
made from them (the ``feasible`` column, ``pareto.csv``, ``best.json`` and ``summary.json``'s ``pareto``).

The maths is `rushhpc.sweeps.pareto`; this module applies it to journal records. The front is the
set of finished, feasible evaluations whose metrics no other such evaluation dominates; it is kept
up to date as records arrive (`Objectives.add`), so the progress display and ``best.json`` follow it.

Example::

    obj = Objectives(cfg.data)          # metric: [error, latency], constraints: {...}
    for r in records: obj.add(r)
    obj.front_document()                # what best.json holds
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rushhpc.core.states import TaskState
from rushhpc.sweeps import pareto
from rushhpc.sweeps.config.objectives import directions_of, metrics_of

if TYPE_CHECKING:
    import pandas as pd

FEASIBLE_COLUMN = "feasible"
PARETO_FILE = "pareto.csv"
GIVEN, OBSERVED = "given", "observed"  # where summary.json's reference point came from


class Objectives:
    """The metrics, directions and constraints of one sweep, and its front so far."""

    def __init__(self, data: dict[str, Any]):
        self.metrics = metrics_of(data)
        self.directions = directions_of(data)
        self.multi = len(self.metrics) > 1
        self.constraints: dict[str, dict[str, float]] = dict(data.get("constraints") or {})
        self.given_ref: list[float] | None = data.get("reference_point")
        self.front: list[dict[str, Any]] = []  # records of the current front
        self.candidates: list[dict[str, Any]] = []  # every finished, feasible record with its metrics
        self._hv: tuple[int, float | None] | None = None  # (len(candidates) when computed, hypervolume)

    def feasible(self, r: dict[str, Any]) -> bool | None:
        """Whether a finished record meets every constraint (True without constraints); None for a failed one."""
        if r.get("state") != TaskState.FINISHED:
            return None
        return pareto.feasible(r.get("outputs"), self.constraints) if self.constraints else True

    def values(self, r: dict[str, Any]) -> list[float] | None:
        """The metrics of a finished record (None: failed, or a metric missing)."""
        if r.get("state") != TaskState.FINISHED:
            return None
        return pareto.metric_values(r.get("outputs"), self.metrics)

    def point(self, r: dict[str, Any]) -> tuple[float, ...] | None:
        """A front candidate's point in minimisation space; None when it is not a candidate (infeasible too)."""
        v = self.values(r)
        if v is None or not self.feasible(r):
            return None
        return pareto.to_min(v, self.directions)

    def add(self, r: dict[str, Any]) -> bool:
        """Take one record (several metrics only); True when the front changed."""
        if not self.multi:
            return False
        p = self.point(r)
        if p is None:
            return False
        self.candidates.append(r)
        pts = [self.point(f) for f in self.front]
        if any(q is not None and pareto.dominates(q, p) for q in pts):
            return False
        self.front = [f for f, q in zip(self.front, pts) if q is None or not pareto.dominates(p, q)] + [r]
        self.front.sort(key=lambda f: f["eval"])
        return True

    def reference(self) -> tuple[list[float] | None, str]:
        """The hypervolume's reference point (the metrics' own units) and where it came from: ``given``
        (``reference_point:``) or ``observed`` (`pareto.reference_point` of the finished, feasible evaluations)."""
        if self.given_ref is not None:
            return list(self.given_ref), GIVEN
        vals = [v for v in (self.values(r) for r in self.candidates) if v is not None]
        return pareto.reference_point(vals, self.directions), OBSERVED

    def hypervolume(self) -> float | None:
        """The front's hypervolume against `reference`; None before the first feasible result."""
        if self._hv is not None and self._hv[0] == len(self.candidates):
            return self._hv[1]
        ref, _ = self.reference()
        hv = None
        if ref is not None and self.front:
            pts = [p for p in (self.point(r) for r in self.front) if p is not None]
            hv = pareto.hypervolume(pts, pareto.to_min(ref, self.directions))
        self._hv = (len(self.candidates), hv)
        return hv

    def progress(self) -> tuple[int | None, float | None]:
        """(front size, hypervolume) for the progress display; (None, None) with one metric."""
        if not self.multi:
            return None, None
        return len(self.front), self.hypervolume()

    # ------------------------------------------------------------------ files
    def front_document(self) -> dict[str, Any]:
        """What ``best.json`` holds with several metrics: the front, ordered by eval, and how it is measured."""
        ref, source = self.reference()
        return {
            "metrics": self.metrics, "directions": self.directions, "constraints": self.constraints or None,
            "reference_point": ref, "reference_point_source": source, "hypervolume": self.hypervolume(),
            "size": len(self.front),
            "front": [{"eval": r["eval"], "values": dict(zip(self.metrics, self.values(r) or [])),
                       "params": r.get("params"), "outputs": r.get("outputs"), "worker_id": r.get("worker_id"),
                       "finished_at": r.get("finished_at"), "key": r.get("key")} for r in self.front],
        }

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """summary.json's ``pareto`` (several metrics) or ``constraints`` counts (one metric with constraints)."""
        flags = [self.feasible(r) for r in records]
        counts = {"feasible": sum(1 for f in flags if f is True), "infeasible": sum(1 for f in flags if f is False)}
        if not self.multi:
            return counts
        ref, source = self.reference()
        return {"metrics": self.metrics, "directions": self.directions, "size": len(self.front),
                "evals": [r["eval"] for r in self.front], "hypervolume": self.hypervolume(),
                "reference_point": ref, "reference_point_source": source, **counts}

    def add_feasible(self, df: "pd.DataFrame", cols: dict, records: list[dict[str, Any]]) -> None:
        """The ``feasible`` column (after the outputs; empty for failed evaluations) when there are constraints."""
        if not self.constraints:
            return
        import pandas as pd

        by_eval = {r["eval"]: self.feasible(r) for r in records}
        taken = set(df.columns)
        name = FEASIBLE_COLUMN
        while name in taken:
            name = "sweep_" + name
        outs = [c for c in cols["outputs"].values() if c in taken]
        at = (list(df.columns).index(outs[-1]) + 1) if outs else len(df.columns)
        if not outs and cols["meta"].get("state") in taken:
            at = list(df.columns).index(cols["meta"]["state"])
        flags = [by_eval.get(int(e)) for e in df[cols["meta"]["eval"]]]
        df.insert(at, name, pd.array(flags, dtype="boolean"))
        cols["meta"][FEASIBLE_COLUMN] = name

    def write_pareto(self, out: Path, df: "pd.DataFrame", cols: dict) -> list[str]:
        """``pareto.csv``: the rows of the results table that are on the front (several metrics only)."""
        if not self.multi:
            return []
        evals = {r["eval"] for r in self.front}
        rows = df[df[cols["meta"]["eval"]].isin(evals)]
        tmp = out / f".{PARETO_FILE}.{os.getpid()}.tmp"
        rows.to_csv(tmp, index=False)
        os.replace(tmp, out / PARETO_FILE)
        return [PARETO_FILE]

    def text(self) -> str:
        """The end summary's line with several metrics."""
        hv = self.hypervolume()
        ref, source = self.reference()
        evals = ", ".join(str(r["eval"]) for r in self.front[:12]) + (", ..." if len(self.front) > 12 else "")
        refs = ", ".join(f"{x:.6g}" for x in ref) if ref else "-"
        return (f"  Pareto front of {', '.join(self.metrics)}: {len(self.front)} evaluation(s) (eval {evals or '-'}), "
                f"hypervolume {'-' if hv is None else f'{hv:.6g}'} (reference point [{refs}], {source})")
