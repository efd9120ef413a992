"""How a manager shows itself: its summary (plain text and HTML) and the progress bars of its waits.

This is the manager layer's display (`Rush.__repr__`, `Rush._repr_html_`, `wait_for_tasks` and
`wait_for_workers` use it, and a sweep turns its bars off with `no_progress_bars`); it reads the
network only through `Network`'s methods.

`manager_repr` and `manager_html` are what ``repr(rush)`` and Jupyter's rich display show:
the network, its Redis (address and database, never the password), worker counts by state,
task counts by state and, for a sweep, the best result so far (the metric and direction
the sweep recorded, `Network.sweep_info`). They read a few counters
(three round trips, plus the finished tasks for a sweep's best, which the manager caches
and reads incrementally) and never raise: an unreachable Redis is shown as such.

`progress` is the bar `wait_for_tasks` and `wait_for_workers` show: tqdm (or rich) when the
session is interactive (a terminal, or a Jupyter kernel), nothing otherwise (a batch job, a
pipe, a test); ``RUSHHPC_PROGRESS=0`` or ``1`` decides instead; inside `no_progress_bars` (a
sweep, which has its own display) there is none.

Nothing here is imported by workers, and nothing heavy is imported at module level.

Example:
    >>> print(manager_repr(rush))
    <Rush network 'sweep-1', Redis 127.0.0.1:6379/0 (password set)>
      workers  2 running
      tasks    10 queued, 2 running, 88 finished
      best     y = 0.397887 (x1=3.14159, x2=2.275)
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

from rushhpc import defaults
from rushhpc.core.states import TaskState, WorkerState

if TYPE_CHECKING:
    from rushhpc.network.view import Network

_META_COLUMNS = {"condition", "worker_id", "state", "keys", "created_at", "started_at", "finished_at"}


# ---------------------------------------------------------------------- the summary


def summary(rush: "Network", metric: str | None = None, direction: str | None = None) -> dict[str, Any]:
    """What the text and HTML summaries show, as plain data: ``network``, ``kind``, ``redis``,
    ``embedded``, ``password``, ``workers`` and ``tasks`` (state -> count, or None when Redis
    could not be read), ``error``, ``best`` (None, or ``{"metric", "value", "direction", "params",
    "key"}``, or ``{"metric", "skipped": reason}``).

    ``metric``/``direction`` make any network a sweep for this call; otherwise the sweep the network
    runs says (`Network.sweep_info`, written by ``rushhpc sweep``; direction default ``minimize``).

    Example:
        >>> summary(rush)["tasks"]
        {'queued': 0, 'running': 2, 'finished': 98, 'failed': 0}
    """
    cfg = rush.config
    out: dict[str, Any] = {
        "network": rush.network_id,
        "kind": type(rush).__name__,
        "redis": f"{cfg.address}/{cfg.db}" + (" (TLS)" if cfg.tls else ""),
        "embedded": bool(getattr(rush, "embedded", False)),
        "password": bool(cfg.password),
        "workers": None,
        "tasks": None,
        "error": None,
        "best": None,
    }
    try:
        out["workers"] = rush.worker_counts()
        out["tasks"] = rush.counts_by_state()
        if metric is None:
            info = rush.sweep_info()
            if info is not None:
                metric, direction = info.metric, direction or info.direction
        if metric:
            out["best"] = _best(rush, metric, direction or "minimize", out["tasks"].get(TaskState.FINISHED, 0))
    except Exception as e:  # noqa: BLE001 - a summary must not raise (Redis down, network reset, ...)
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def _best(rush: "Network", metric: str, direction: str, n_finished: int) -> dict[str, Any]:
    if direction not in ("minimize", "maximize"):
        return {"metric": metric, "skipped": f"unknown direction {direction!r}"}
    if n_finished > defaults.SUMMARY_BEST_MAX_TASKS:
        return {"metric": metric, "skipped": f"{n_finished} finished tasks; look with rush.fetch_finished_tasks()"}
    if n_finished == 0:
        return {"metric": metric, "skipped": "no finished task yet"}
    import pandas as pd

    df = rush.fetch_finished_tasks()
    if metric not in df.columns:
        return {"metric": metric, "skipped": f"no column {metric!r} in the finished tasks"}
    values = pd.to_numeric(df[metric], errors="coerce")
    if values.notna().sum() == 0:
        return {"metric": metric, "skipped": f"no numeric {metric!r} yet"}
    i = values.idxmin() if direction == "minimize" else values.idxmax()
    row = df.loc[i]
    params = {c: row[c] for c in df.columns if c not in _META_COLUMNS and c != metric}
    return {"metric": metric, "value": float(values[i]), "direction": direction, "params": params,
            "key": row.get("keys")}


def _counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "?"
    shown = [f"{n} {state}" for state, n in counts.items() if n]
    return ", ".join(shown) if shown else "none"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _params(params: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={_fmt(v)}" for k, v in list(params.items())[:limit]]
    if len(params) > limit:
        items.append("...")
    return ", ".join(items)


def _redis_line(s: dict[str, Any]) -> str:
    notes = [n for n, on in (("embedded", s["embedded"]), ("password set", s["password"])) if on]
    return s["redis"] + (f" ({', '.join(notes)})" if notes else "")


def manager_repr(rush: "Network", metric: str | None = None, direction: str | None = None) -> str:
    """The plain-text summary of a manager (what ``repr(rush)`` shows).

    Example:
        >>> print(manager_repr(rush))
        <Rush network 'sweep-1', Redis 127.0.0.1:6379/0 (embedded, password set)>
          workers  2 running, 1 terminated
          tasks    98 finished, 2 failed
    """
    s = summary(rush, metric, direction)
    lines = [f"<{s['kind']} network {s['network']!r}, Redis {_redis_line(s)}>"]
    if s["error"] and s["workers"] is None:
        lines.append(f"  Redis cannot be read: {s['error']}")
        return "\n".join(lines)
    lines.append(f"  workers  {_counts(s['workers'])}")
    lines.append(f"  tasks    {_counts(s['tasks'])}")
    best = s["best"]
    if best is not None:
        if "skipped" in best:
            lines.append(f"  best     {best['metric']}: {best['skipped']}")
        else:
            params = _params(best["params"])
            lines.append(f"  best     {best['metric']} = {_fmt(best['value'])}" + (f" ({params})" if params else ""))
    if s["error"]:
        lines.append(f"  (incomplete: {s['error']})")
    return "\n".join(lines)


_STATE_COLORS: dict[str, str] = {  # members hash as their values: plain state strings find them
    TaskState.QUEUED: "#9e9e9e", TaskState.RUNNING: "#1e88e5", TaskState.FINISHED: "#43a047",
    TaskState.FAILED: "#e53935", WorkerState.PENDING: "#9e9e9e", WorkerState.TERMINATED: "#607d8b",
    WorkerState.KILLED: "#fb8c00", WorkerState.LOST: "#8e24aa",
}


def _badges(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "?"
    parts = []
    for state, n in counts.items():
        if not n:
            continue
        color = _STATE_COLORS.get(state, "#757575")
        parts.append(f'<span style="display:inline-block;margin-right:0.8em">'
                     f'<span style="color:{color}">&#9679;</span> {n} {html.escape(state)}</span>')
    return "".join(parts) or '<span style="color:#9e9e9e">none</span>'


def _bar(tasks: dict[str, int] | None) -> str:
    """A stacked bar of the task states (widths in percent of all tasks)."""
    if not tasks:
        return ""
    total = sum(tasks.values())
    if total == 0:
        return ""
    cells = "".join(
        f'<div title="{html.escape(state)}: {n}" style="width:{100.0 * n / total:.3f}%;background:'
        f'{_STATE_COLORS.get(state, "#757575")}"></div>'
        for state, n in tasks.items() if n)
    return (f'<div style="display:flex;height:6px;width:24em;max-width:100%;background:#eee;'
            f'border-radius:3px;overflow:hidden;margin-top:2px">{cells}</div>')


def manager_html(rush: "Network", metric: str | None = None, direction: str | None = None) -> str:
    """The HTML summary of a manager (what Jupyter shows for ``rush``): the same content as
    `manager_repr`, as a small table. Every value is escaped.

    Example:
        >>> from IPython.display import HTML; HTML(manager_html(rush))
    """
    s = summary(rush, metric, direction)
    esc = html.escape
    td = 'style="text-align:left;padding:1px 1em 1px 0;vertical-align:top"'
    rows = [f"<tr><th {td}>Redis</th><td {td}><code>{esc(_redis_line(s))}</code></td></tr>"]
    if s["error"] and s["workers"] is None:
        rows.append(f'<tr><th {td}>error</th><td {td} style="color:#e53935">Redis cannot be read: '
                    f"{esc(s['error'])}</td></tr>")
    else:
        rows.append(f"<tr><th {td}>workers</th><td {td}>{_badges(s['workers'])}</td></tr>")
        rows.append(f"<tr><th {td}>tasks</th><td {td}>{_badges(s['tasks'])}{_bar(s['tasks'])}</td></tr>")
        best = s["best"]
        if best is not None:
            if "skipped" in best:
                cell = f"{esc(best['metric'])}: {esc(best['skipped'])}"
            else:
                params = _params(best["params"])
                cell = (f"<code>{esc(best['metric'])} = {esc(_fmt(best['value']))}</code>"
                        + (f" ({esc(params)})" if params else ""))
            rows.append(f"<tr><th {td}>best</th><td {td}>{cell}</td></tr>")
        if s["error"]:
            rows.append(f"<tr><th {td}>note</th><td {td}>incomplete: {esc(s['error'])}</td></tr>")
    return (f'<div class="rushhpc-manager" style="font-family:sans-serif;font-size:0.9em">'
            f"<div><strong>{esc(s['kind'])}</strong> network <code>{esc(s['network'])}</code></div>"
            f'<table style="border-collapse:collapse;margin-top:0.3em">{"".join(rows)}</table></div>')


# ---------------------------------------------------------------------- progress bars


def in_jupyter() -> bool:
    """True inside a Jupyter (ipykernel) session."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - any IPython oddity means "not a notebook"
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether progress bars show by default: ``RUSHHPC_PROGRESS`` (1/0) if set, else a Jupyter
    kernel or a terminal on stderr."""
    env = os.environ.get("RUSHHPC_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if in_jupyter():
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


class Progress:
    """A bar that `progress` yields: ``set(done)`` moves it to an absolute count; ``set(done, total)``
    also changes the total. The no-op bar (not interactive) has ``enabled`` False."""

    enabled = False

    def set(self, done: int, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmProgress(Progress):
    enabled = True

    def __init__(self, total: int, desc: str, unit: str):
        if in_jupyter():
            try:
                import ipywidgets  # noqa: F401 - tqdm's notebook bar needs it
                from tqdm.notebook import tqdm
            except ImportError:
                from tqdm.std import tqdm
        else:
            from tqdm.std import tqdm
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        self.done = 0

    def set(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        if done != self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        self.bar.close()


class _RichProgress(Progress):
    enabled = True

    def __init__(self, total: int, desc: str, unit: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(file=sys.stderr))
        self.progress.start()
        self.task = self.progress.add_task(f"{desc} ({unit}s)", total=total)

    def set(self, done: int, total: int | None = None) -> None:
        self.progress.update(self.task, completed=done, total=total)  # total None: unchanged

    def close(self) -> None:
        self.progress.stop()


def _make(total: int, desc: str, unit: str) -> Progress:
    try:
        return _TqdmProgress(total, desc, unit)
    except ImportError:
        pass
    try:
        return _RichProgress(total, desc, unit)
    except ImportError:
        return Progress()  # neither installed: pip install 'rushhpc[notebook]'


_SUPPRESSED = 0  # > 0 while an owner of the screen (a sweep's display) runs: no bar of ours is drawn
_SUPPRESS_LOCK = threading.Lock()


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Within the block, `progress` draws no bar, whatever ``enabled`` or `interactive` say: for a
    program with its own display (a sweep's panel or progress lines), where a manager's tqdm bar
    for ``wait_for_workers`` would be printed above it (issue 20, defect 7). Nests; any thread.

    Example:
        >>> with no_progress_bars():
        ...     rush.wait_for_workers(2)   # no "workers" bar
    """
    global _SUPPRESSED
    with _SUPPRESS_LOCK:
        _SUPPRESSED += 1
    try:
        yield
    finally:
        with _SUPPRESS_LOCK:
            _SUPPRESSED -= 1


@contextlib.contextmanager
def progress(total: int, desc: str, enabled: bool | None = None, unit: str = "task") -> Iterator[Progress]:
    """A progress bar for a wait: yields a `Progress`; call ``bar.set(done)`` as things complete.

    ``enabled=None`` follows `interactive` (on in a terminal or Jupyter, off otherwise); True or
    False forces it. Without tqdm or rich installed, with nothing to wait for, or inside
    `no_progress_bars`, the bar is a no-op. The bar is closed when the block ends, also on an exception.

    Example:
        >>> with progress(len(keys), "tasks") as bar:
        ...     while remaining: ...; bar.set(len(keys) - len(remaining))
    """
    on = interactive() if enabled is None else enabled
    bar = _make(total, desc, unit) if on and total > 0 and not _SUPPRESSED else Progress()
    try:
        yield bar
    finally:
        bar.close()
