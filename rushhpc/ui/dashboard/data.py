"""What the dashboard shows, read through `Network` views: plain JSON-ready dicts and lists.

One `NetworkData` per network the page looks at. It keeps the finished tasks it has seen
(read incrementally with `Network.fetch_new_tasks`, so a refresh reads only tasks finished
since the last), samples of the finished + failed count (throughput), and the output names
of the network's tasks. Nothing here writes to Redis.

Every read goes through the network view (no raw Redis here; a test checks it): the output
names of a few finished tasks (`TaskStore.task_outputs`), the id of the newest log record
(`TaskStore.last_log_id`), the sweep's objective (`Network.sweep_record`, `Network.sweep_info`)
and Redis's clock (`Network.server_time`), each in one round trip.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import io
import json
import math
import threading
import time
from typing import Any, Callable, Iterable, Sequence

from rushhpc.core.states import CANCEL_FIELD, TERMINAL_TASK_STATES, TaskState
from rushhpc.errors import RushConfigError
from rushhpc.network.view import Network, list_networks
from rushhpc.ui.dashboard.sweep_views import fidelity_curves, lift_outputs, sweep_metrics

META_COLUMNS = ("condition", CANCEL_FIELD, "worker_id", "state", "keys", "created_at", "started_at", "finished_at",
                "attempt")
TIME_COLUMNS = ("created_at", "started_at", "finished_at")
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
DIRECTIONS = ("minimize", "maximize")
THROUGHPUT_WINDOW = 30.0  # seconds of samples behind the "recent" throughput
SNAPSHOT_TTL = 0.4  # several clients polling together share one read
MAX_PLOT_POINTS = 5000  # the best-so-far series sent to the page (thinned beyond)


def jsonable(v: Any) -> Any:
    """A value as JSON can carry it: NaN and infinities -> None, numpy scalars and
    timestamps -> plain numbers (Unix seconds)."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "timestamp") and callable(v.timestamp):  # pandas / datetime timestamps
        try:
            t = float(v.timestamp())
        except (ValueError, OverflowError):  # NaT
            return None
        return t if math.isfinite(t) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "item"):  # numpy scalars
        return jsonable(v.item())
    if hasattr(v, "tolist"):  # numpy arrays
        return jsonable(v.tolist())
    return str(v)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def choose_objective(outputs: Sequence[str], numeric: Sequence[str], sweep: dict[str, Any] | None,
                     column: str | None = None, direction: str | None = None) -> tuple[str | None, str, str]:
    """(column, direction, source) of the best-so-far plot.

    The user's choice wins; then the sweep's meta (``metric``, or ``objective`` when it names
    a column, and ``direction``); then defaults: ``y`` if an output is called so, else the first
    numeric output, else the first numeric column; minimize.

    Example:
        >>> choose_objective(["loss", "acc"], ["x", "loss", "acc"], None)
        ('loss', 'minimize', 'default')
    """
    source = "default"
    col: str | None = None
    d = "minimize"
    if sweep:
        for name in (sweep.get("metric"), sweep.get("objective")):
            if isinstance(name, str) and name in numeric:
                col, source = name, "sweep"
                break
        if sweep.get("direction") in DIRECTIONS:
            d, source = str(sweep["direction"]), "sweep"
    if col is None:
        num_out = [c for c in outputs if c in numeric]
        if "y" in num_out:
            col = "y"
        elif num_out:
            col = num_out[0]
        elif "y" in numeric:
            col = "y"
        elif numeric:
            col = numeric[0]
    if column and column in numeric:
        col, source = column, "user"
    if direction in DIRECTIONS:
        if direction != d:
            source = "user"
        d = direction
    return col, d, source


def best_so_far(values: Iterable[Any], direction: str) -> tuple[list[int], list[float], list[float]]:
    """Finish order (1-based), value and best value so far of every task with a finite number.

    Example:
        >>> best_so_far([3, None, 1, 2], "minimize")
        ([1, 3, 4], [3, 1, 2], [3, 1, 1])
    """
    xs: list[int] = []
    ys: list[float] = []
    best: list[float] = []
    b: float | None = None
    for i, v in enumerate(values, start=1):
        if not is_number(v):
            continue
        if b is None or (v < b if direction == "minimize" else v > b):
            b = v
        xs.append(i)
        ys.append(v)
        best.append(b)
    return xs, ys, best


def thin(xs: list[int], ys: list[float], best: list[float], at_most: int) -> tuple[list[int], list[float], list[float]]:
    """At most about ``at_most`` points: every k-th, the last, and every point where the best
    value changed (so the best-so-far line is exact).

    Example:
        >>> thin([1, 2, 3, 4, 5], [5, 6, 4, 7, 8], [5, 5, 4, 4, 4], 2)
        ([1, 3, 4, 5], [5, 4, 7, 8], [5, 4, 4, 4])
    """
    n = len(xs)
    if n <= at_most:
        return xs, ys, best
    step = math.ceil(n / at_most)
    keep = [i for i in range(n) if i % step == 0 or i == n - 1 or best[i] != best[i - 1]]
    return [xs[i] for i in keep], [ys[i] for i in keep], [best[i] for i in keep]


def _sort_key(col: str) -> Callable[[dict[str, Any]], tuple]:
    def key(row: dict[str, Any]) -> tuple:
        v = row.get(col)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return (2, 0, "")
        if is_number(v):
            return (0, v, "")
        return (1, 0, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    return key


def sort_rows(rows: list[dict[str, Any]], sort: str | None, order: str) -> list[dict[str, Any]]:
    """Rows sorted by one column (numbers before text; missing values last in either order)."""
    if not sort:
        return list(reversed(rows)) if order == "desc" else list(rows)
    present = [r for r in rows if r.get(sort) is not None]
    missing = [r for r in rows if r.get(sort) is None]
    return sorted(present, key=_sort_key(sort), reverse=order == "desc") + missing


def _csv_cell(v: Any, col: str) -> Any:
    if v is None:
        return ""
    if col in TIME_COLUMNS and is_number(v):
        return dt.datetime.fromtimestamp(float(v), dt.timezone.utc).isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # a spreadsheet would run it as a formula
    return v


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text (timestamps as ISO 8601 UTC, lists and dicts as JSON)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_cell(r.get(c), c) for c in columns])
    return buf.getvalue()


def network_summaries(config: Any, client: Any) -> list[dict[str, Any]]:
    """Every network on this Redis with its worker and task counts (as `rushhpc networks --json`)."""
    out = []
    for nid in list_networks(client):
        net = Network(nid, config, client=client)
        sweep = net.sweep_info()  # None for a record written as a JSON string (the summary shows rushhpc's)
        out.append({"network_id": nid, "workers": net.worker_counts(), "tasks": net.counts_by_state(),
                    "created_at": float(net.meta().get("created_at") or 0) or None,
                    "sweep": dataclasses.asdict(sweep) if sweep is not None else None})
    return out


class NetworkData:
    """The dashboard's reads of one network, with the caches that keep them cheap.

    Thread-safe: the web server calls it from its thread pool.
    """

    def __init__(self, net: Network):
        self.net = net
        self._lock = threading.RLock()
        self.rows: list[dict[str, Any]] = []  # finished tasks, in finish order
        self.outputs: list[str] = []  # output names (ys keys) seen, in first-seen order
        self._columns: dict[str, None] = {}
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=600)
        self._snapshot: tuple[float, dict[str, Any]] | None = None

    @property
    def network_id(self) -> str:
        return self.net.network_id

    def check(self) -> None:
        """Raise `RushConfigError` when the network is gone (reset)."""
        if not self.net.exists():
            raise RushConfigError(f"network {self.network_id!r} no longer exists on Redis at {self.net.config.address}")

    # ------------------------------------------------------------------ finished tasks
    def refresh(self) -> list[dict[str, Any]]:
        """Read tasks finished since the last call; returns every finished row (cached)."""
        with self._lock:
            n = self.net.n_finished_tasks
            if n < len(self.rows):  # reset under us: start again
                self.net.reset_cache()
                self.rows = []
                self.outputs = []
                self._columns = {}
            if n > len(self.rows):
                df = self.net.fetch_new_tasks()
                new = [{str(k): jsonable(v) for k, v in r.items()} for r in df.to_dict("records")]
                # a column missing in some rows came back as NaN -> None: drop those keys again
                new = [{k: v for k, v in r.items() if v is not None} for r in new]
                self._learn_outputs(new)
                for r in new:
                    for c in r:
                        self._columns.setdefault(c, None)
                self.rows.extend(new)
            return self.rows

    def _learn_outputs(self, new: list[dict[str, Any]]) -> None:
        sample = new[:10] + new[-10:] if len(new) > 20 else new
        keys = [r["keys"] for r in sample if r.get("keys")]
        if not keys:
            return
        for ys in self.net.tasks.task_outputs(keys):
            for name in ys if isinstance(ys, dict) else ():
                if name not in self.outputs:
                    self.outputs.append(str(name))

    def columns(self, rows: Sequence[dict[str, Any]] | None = None) -> list[str]:
        """Parameters, then outputs, then the meta columns (worker, state, times, key)."""
        seen: dict[str, None] = dict(self._columns) if rows is None else {}
        for r in rows or ():
            for c in r:
                seen.setdefault(c, None)
        params = [c for c in seen if c not in META_COLUMNS and c not in self.outputs]
        outs = [c for c in self.outputs if c in seen]
        meta = [c for c in META_COLUMNS if c in seen]
        return params + outs + meta

    def numeric_columns(self, rows: Sequence[dict[str, Any]] | None = None, outputs: Sequence[str] | None = None) -> list[str]:
        """Columns with a number in at least one finished task (outputs first)."""
        rows = self.rows if rows is None else rows
        outputs = self.outputs if outputs is None else outputs
        found = {c for r in rows for c, v in r.items() if c not in META_COLUMNS and is_number(v)}
        return [c for c in outputs if c in found] + sorted(found - set(outputs))

    # ------------------------------------------------------------------ live view
    def workers(self) -> list[dict[str, Any]]:
        """Worker rows (as `rushhpc workers --json`), with ``heartbeat_age``."""
        rows = self.net.worker_rows()
        ages = self.net.heartbeat_ages([r["worker_id"] for r in rows])
        for r in rows:
            age = ages.get(r["worker_id"])
            r["heartbeat_age"] = round(age, 3) if age is not None else None
        return [jsonable(r) for r in rows]

    def throughput(self, done: int) -> dict[str, float | None]:
        """Tasks ended (finished or failed) per second over the last samples."""
        now = time.monotonic()
        with self._lock:
            if not self._samples or now - self._samples[-1][0] >= 0.5:
                self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > THROUGHPUT_WINDOW:
                self._samples.popleft()
            t0, d0 = self._samples[0]
        span = now - t0
        return {"recent": (done - d0) / span if span >= 1.0 else None, "window": round(span, 1)}

    def counts(self) -> dict[str, Any]:
        tasks = self.net.counts_by_state()
        return {"tasks": tasks, "workers": self.net.worker_counts(),
                "throughput": self.throughput(sum(tasks[s] for s in TERMINAL_TASK_STATES))}

    def snapshot(self) -> dict[str, Any]:
        """What the page redraws on every tick: workers, counts, throughput, clocks, log head."""
        now = time.monotonic()
        with self._lock:
            if self._snapshot is not None and now - self._snapshot[0] < SNAPSHOT_TTL:
                return self._snapshot[1]
        self.check()
        c = self.counts()
        doc = {"network": self.network_id, "server_time": self.net.server_time(), "workers": self.workers(),
               "worker_counts": c["workers"], "tasks": c["tasks"], "throughput": c["throughput"],
               "log_last_id": self.net.tasks.last_log_id()}
        with self._lock:
            self._snapshot = (now, doc)
        return doc

    # ------------------------------------------------------------------ tables and plots
    def tasks(self, state: str = TaskState.FINISHED, sort: str | None = None, order: str = "asc",
              limit: int | None = 200, offset: int = 0) -> dict[str, Any]:
        """One page of the task table of one state, sorted by one column."""
        if state not in TaskState.values():
            raise RushConfigError(f"unknown task state {state!r}; states are {', '.join(TaskState.values())}")
        if order not in ("asc", "desc"):
            raise RushConfigError(f"order must be asc or desc, got {order!r}")
        if state == TaskState.FINISHED:
            with self._lock:
                rows = list(self.refresh())
                columns = self.columns()
        else:
            rows = [{str(k): jsonable(v) for k, v in r.items() if v is not None}
                    for r in self.net.task_rows([state])]
            columns = self.columns(rows)
        if sort and sort not in columns:
            raise RushConfigError(f"no column {sort!r} in the {state} tasks")
        ordered = sort_rows(rows, sort, order)
        page = ordered[offset: offset + limit] if limit is not None else ordered[offset:]
        return {"network": self.network_id, "state": state, "columns": columns, "outputs": list(self.outputs),
                "total": len(rows), "offset": offset, "rows": page}

    def csv(self, state: str = TaskState.FINISHED, sort: str | None = None, order: str = "asc") -> str:
        doc = self.tasks(state, sort, order, limit=None)
        return to_csv(doc["rows"], doc["columns"])

    def best(self, column: str | None = None, direction: str | None = None) -> dict[str, Any]:
        """The best-so-far series of one numeric column (the objective)."""
        if direction is not None and direction not in DIRECTIONS:
            raise RushConfigError(f"direction must be minimize or maximize, got {direction!r}")
        with self._lock:
            rows = list(self.refresh())
            outputs = list(self.outputs)
        sweep = self.net.sweep_record()
        rows, lifted = lift_outputs(rows)  # a sweep's outputs are nested under "outputs": its metric as a column
        outputs = lifted or outputs
        numeric = self.numeric_columns(rows, outputs)
        metrics = sweep_metrics(sweep)
        if len(metrics) > 1 and not column:  # several metrics: no single best (the Pareto panel shows the front)
            return {"network": self.network_id, "columns": numeric, "outputs": outputs, "column": None,
                    "direction": direction or "minimize", "source": "sweep", "metrics": metrics, "x": [], "y": [],
                    "best": [], "best_row": None, "n_points": 0, "n_finished": len(rows)}
        if column and column not in numeric:
            raise RushConfigError(f"no numeric column {column!r} in the finished tasks (columns: {', '.join(numeric)})")
        col, d, source = choose_objective(outputs, numeric, sweep, column, direction)
        xs, ys, best = best_so_far((r.get(col) for r in rows), d) if col else ([], [], [])
        best_row = None
        if best and col is not None:
            best_row = rows[xs[ys.index(best[-1])] - 1]  # the first task that reached the best value
        n_points = len(xs)
        xs, ys, best = thin(xs, ys, best, MAX_PLOT_POINTS)
        return {"network": self.network_id, "columns": numeric, "outputs": outputs, "column": col,
                "direction": d, "source": source, "metrics": metrics, "x": xs, "y": ys, "best": best,
                "best_row": best_row, "n_points": n_points, "n_finished": len(rows)}

    def fidelity(self) -> dict[str, Any]:
        """Each configuration's curve over fidelity (an asha or hyperband sweep: `fidelity_curves`)."""
        with self._lock:
            rows = list(self.refresh())
        return {"network": self.network_id, **fidelity_curves(rows, self.net.sweep_record())}

    def timeline(self, limit: int = 2000) -> dict[str, Any]:
        """Worker lifetimes and their tasks' run times (the last ``limit`` finished, and the
        running ones), in Redis server seconds."""
        with self._lock:
            rows = list(self.refresh()[-limit:])
        running = self.net.task_rows([TaskState.RUNNING])
        tasks = [[r.get("worker_id"), r.get("started_at"), r.get("finished_at"), TaskState.FINISHED] for r in rows
                 if r.get("started_at") and r.get("finished_at")]
        tasks += [[r.get("worker_id"), jsonable(r.get("started_at")), None, TaskState.RUNNING] for r in running
                  if r.get("started_at")]
        workers = [{k: w.get(k) for k in ("worker_id", "state", "hostname", "started_at", "stopped_at")}
                   for w in self.workers()]
        return {"network": self.network_id, "now": self.net.server_time(), "workers": workers, "tasks": tasks}

    def logs(self, level: str | None = None, after: str | None = None, limit: int = 500) -> dict[str, Any]:
        """Log records after stream id ``after``, at ``level`` or above, the last ``limit``."""
        floor = 0
        if level:
            if level.upper() not in LEVELS:
                raise RushConfigError(f"unknown log level {level!r}; levels are {', '.join(LEVELS)}")
            floor = LEVELS[level.upper()]
        rows = self.net.log_rows(after or "-")
        last: str | None = rows[-1]["id"] if rows else after
        kept = [r for r in rows if LEVELS.get(str(r.get("level") or "").upper(), 0) >= floor]
        return {"network": self.network_id, "rows": [jsonable(r) for r in kept[-limit:]], "last_id": last,
                "omitted": max(0, len(kept) - limit)}

    def pareto(self) -> dict[str, Any]:
        """The Pareto front of a sweep with several metrics (`pareto_front` of the finished tasks)."""
        with self._lock:
            rows = list(self.refresh())
        return {"network": self.network_id, **pareto_front(rows, self.net.sweep_record())}


def pareto_front(rows: Sequence[dict[str, Any]], sweep: dict[str, Any] | None) -> dict[str, Any]:
    """The front of the first two metrics of a sweep with several (its record: ``metric: "a,b"``,
    ``direction``, ``objectives``: constraints and reference point): every finished task with both metrics as
    feasible, infeasible or on the front (the feasible tasks no other dominates, by all metrics), the
    hypervolume and its reference point (given, or observed as `rushhpc.sweeps.pareto.reference_point`).
    ``multi`` is False for a network that is not such a sweep's.

    Example:
        >>> pareto_front([{"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 2, "b": 2}],
        ...              {"metric": "a,b", "direction": "minimize,minimize"})["front"]
        [[1.0, 2.0], [2.0, 1.0]]
    """
    from rushhpc.sweeps import pareto

    metrics = str((sweep or {}).get("metric") or "").split(",")
    if len(metrics) < 2:
        return {"multi": False, "metrics": metrics}
    directions = str(sweep.get("direction") or "").split(",") if sweep else []
    if len(directions) != len(metrics) or any(d not in DIRECTIONS for d in directions):
        directions = ["minimize"] * len(metrics)
    try:
        extra = json.loads(str((sweep or {}).get("objectives") or "{}"))
    except ValueError:
        extra = {}
    constraints = extra.get("constraints") or {}
    vals, ok = [], []
    for r in rows:  # a sweep's task holds its outputs under "outputs"; other tasks hold them as columns
        out = r["outputs"] if isinstance(r.get("outputs"), dict) else r
        v = pareto.metric_values(out, metrics)
        if v is not None:
            vals.append(v)
            ok.append(pareto.feasible(out, constraints) if constraints else True)
    feas = [v for v, f in zip(vals, ok) if f]
    on = set(pareto.non_dominated([pareto.to_min(v, directions) for v in feas]))
    ref = extra.get("reference_point") or pareto.reference_point(feas, directions)
    hv = pareto.hypervolume([pareto.to_min(feas[i], directions) for i in on], pareto.to_min(ref, directions)) if ref else None
    front = sorted((feas[i][:2] for i in on), key=lambda v: (v[0], v[1]))
    others = [v[:2] for i, v in enumerate(feas) if i not in on][-MAX_PLOT_POINTS:]
    return {"multi": True, "metrics": metrics, "directions": directions, "constraints": constraints or None,
            "front": front, "feasible": others, "infeasible": [v[:2] for v, f in zip(vals, ok) if not f][-MAX_PLOT_POINTS:],
            "hypervolume": hv, "reference_point": ref, "reference_point_source": "given" if extra.get("reference_point")
            else "observed", "n_finished": len(rows), "n_front": len(front)}


__all__ = ["NetworkData", "best_so_far", "choose_objective", "jsonable", "network_summaries", "sort_rows", "thin",
           "to_csv"]
__all__ += ["pareto_front"]
