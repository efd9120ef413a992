"""``rushhpc plot``: PNG files of a sweep or a network, with matplotlib (the ``plot`` extra).

Three figures (four for results with a fidelity, asha and hyperband: each configuration's curve over fidelity,
`fidelity_figure`): the best value over wall time, the best value over evaluations (every
finished evaluation a point, failures red marks at the foot; a log or symlog axis when the
values span decades, `choose_scale`), and a worker timeline (one row per worker with its
number of evaluations, one bar per evaluation from its start to its end, at least `defaults.PLOT_MIN_BAR`
of the run wide; failures in red). The data come from a sweep's output folder (its ``journal.jsonl`` and
``config.yaml``) or from a network in Redis (finished and failed tasks; the objective is
the ``--metric`` output, ``y`` by default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rushhpc import defaults
from rushhpc.core.states import TaskState
from rushhpc.errors import RushConfigError

FIGURES = ("best_over_time.png", "best_over_evaluations.png", "worker_timeline.png")
YSCALES = ("auto", "linear", "log", "symlog")


def records_from_folder(folder: Path) -> tuple[list[dict[str, Any]], str, str]:
    """(records, metric, direction) of a sweep's output folder."""
    import yaml

    journal = folder / "journal.jsonl"
    if not journal.exists():
        raise RushConfigError(f"{folder} is not a sweep output folder (no journal.jsonl): pass a sweep's output "
                              "folder, or --network NAME")
    records = []
    for line in journal.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
    cfg: dict[str, Any] = {}
    if (folder / "config.yaml").exists():
        cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    return records, str(cfg.get("metric") or "y"), str(cfg.get("direction") or "minimize")


def records_from_network(net: Any, metric: str) -> list[dict[str, Any]]:
    """Finished and failed tasks of a `Network` as plot records (value = the ``metric`` output)."""
    out = []
    for row in net.task_rows([TaskState.FINISHED, TaskState.FAILED]):
        v = row.get(metric)
        out.append({"state": row.get("state"), "value": v if isinstance(v, (int, float)) else None,
                    "worker_id": row.get("worker_id"), "started_at": row.get("started_at"),
                    "finished_at": row.get("finished_at")})
    return out


def _best_curve(records: list[dict[str, Any]], direction: str) -> tuple[list[float], list[int], list[float]]:
    """(finish times, evaluation numbers, best so far) over the finished records in finishing order."""
    times: list[float] = []
    evals: list[int] = []
    best: list[float] = []
    cur: float | None = None
    for t, i, r in _in_order(records):
        v = _value(r)
        if v is not None:
            cur = v if cur is None else (min(cur, v) if direction == "minimize" else max(cur, v))
        if cur is not None:
            times.append(t)
            evals.append(i)
            best.append(cur)
    return times, evals, best


def _in_order(records: list[dict[str, Any]]) -> list[tuple[float, int, dict[str, Any]]]:
    """(seconds since the first start, evaluation number, record) of the ended records, in finishing order."""
    done = [r for r in records if r.get("finished_at") is not None]
    done.sort(key=lambda r: float(r["finished_at"]))
    t0 = min((float(r["started_at"]) for r in done if r.get("started_at") is not None), default=0.0)
    return [(float(r["finished_at"]) - t0, i, r) for i, r in enumerate(done, 1)]


def _value(r: dict[str, Any]) -> float | None:
    """The metric of a finished record, None for a failed one or a value that is not a finite number."""
    v = r.get("value")
    if r.get("state") == TaskState.FINISHED and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


DECADES = 1.5  # an axis whose values span more than this many decades is logarithmic (a factor of about 30)


def choose_scale(values: list[float]) -> tuple[str, float | None]:
    """(``"linear"`` | ``"log"`` | ``"symlog"``, the symlog's linear threshold) for a best-so-far plot.

    One early value of 136 on a linear axis flattens every later improvement from 2 to 0.4 (issue 20
    defect 8), so values spanning more than `DECADES` decades get a log axis when all are positive,
    and otherwise (zero or negative values) a symlog axis, linear within the smallest non-zero
    magnitude and logarithmic beyond it.

    Example:
        >>> choose_scale([136.0, 17.0, 2.5, 0.4])
        ('log', None)
        >>> choose_scale([3.0, 2.0, 1.5])
        ('linear', None)
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "linear", None
    big = max(abs(v) for v in finite)
    if min(finite) > 0:
        return ("log", None) if big / min(finite) > 10**DECADES else ("linear", None)
    small = min((abs(v) for v in finite if v != 0), default=0.0)
    if small == 0.0 or big / small <= 10**DECADES:
        return "linear", None
    return "symlog", _linthresh(finite)


def _linthresh(values: list[float]) -> float:
    """The power of ten at or below the smallest non-zero magnitude (1 when all are 0)."""
    small = min((abs(v) for v in values if v != 0 and math.isfinite(v)), default=1.0)
    return float(10 ** math.floor(math.log10(small)))


def figures(records: list[dict[str, Any]], metric: str, direction: str, title: str = "",
            yscale: str = "auto") -> list[tuple[str, Any]]:
    """The three figures as (file name, matplotlib figure), unsaved: the best value over time and over
    evaluations (every finished evaluation as a point, failures as red marks on the axis), and the
    worker timeline (every evaluation a bar at least `defaults.PLOT_MIN_BAR` of the axis wide, so sub-millisecond
    tasks show). ``yscale``: ``auto`` (`choose_scale`), ``linear``, ``log`` or ``symlog``.

    Example:
        >>> [name for name, fig in figures(records, "y", "minimize")]
        ['best_over_time.png', 'best_over_evaluations.png', 'worker_timeline.png']
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    if yscale not in YSCALES:
        raise RushConfigError(f"yscale must be one of {', '.join(YSCALES)}, got {yscale!r}")
    ordered = _in_order(records)
    times, evals, best = _best_curve(records, direction)
    points = [(t, i, v) for t, i, r in ordered if (v := _value(r)) is not None]
    failed = [(t, i) for t, i, r in ordered if r.get("state") == TaskState.FAILED]
    scale, linthresh = choose_scale([v for _, _, v in points] + best) if yscale == "auto" else (yscale, None)
    if scale == "log" and any(v <= 0 for _, _, v in points):
        raise RushConfigError(f"--yscale log needs positive values of {metric}: use symlog (or auto)")
    if scale == "symlog" and linthresh is None:
        linthresh = _linthresh([v for _, _, v in points] + best)
    label = f"best {metric} ({direction})"
    out = []
    for name, col, xlabel in ((FIGURES[0], 0, "wall time (s)"), (FIGURES[1], 1, "evaluations")):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        xs = times if col == 0 else evals
        ax.scatter([p[col] for p in points], [p[2] for p in points], s=12, color="tab:gray", alpha=0.6,
                   label=f"{metric} of each evaluation", zorder=2)
        ax.step(xs, best, where="post", color="tab:blue", label=label, zorder=3)
        if failed:  # no value to place: a red mark at the foot of the axis, at its time
            ax.scatter([f[col] for f in failed], [0.02] * len(failed), marker="x", color="tab:red", s=20,
                       transform=ax.get_xaxis_transform(), label=str(TaskState.FAILED), zorder=4, clip_on=False)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=linthresh)
        else:
            ax.set_yscale(scale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric}" + ("" if scale == "linear" else f" ({scale} scale)"))
        ax.set_title(title or label)
        ax.grid(alpha=0.3, which="both" if scale != "linear" else "major")
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        out.append((name, fig))
    timed = [r for r in records if r.get("started_at") is not None and r.get("finished_at") is not None]
    workers = sorted({str(r.get("worker_id")) for r in timed})
    t0 = min((float(r["started_at"]) for r in timed), default=0.0)
    t1 = max((float(r["finished_at"]) for r in timed), default=1.0)
    least = defaults.PLOT_MIN_BAR * max(t1 - t0, 1e-3)  # a task of 30 us is as visible as one of 1 % of the run
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.4 * len(workers) + 1)), dpi=100)
    labels = []
    for y, wid in enumerate(workers):
        mine = [r for r in timed if str(r.get("worker_id")) == wid]
        bars = [(float(r["started_at"]) - t0, max(least, float(r["finished_at"]) - float(r["started_at"])))
                for r in mine]
        colors = ["tab:red" if r.get("state") == TaskState.FAILED else "tab:green" for r in mine]
        ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=colors, edgecolors="black", linewidths=0.3)
        labels.append(f"{wid} ({len(mine)})")
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels(labels)
    ax.set_xlim(-least, (t1 - t0) + 2 * least)
    ax.set_xlabel("wall time (s)")
    ax.set_title("worker timeline (evaluations per worker in brackets; green: finished, red: failed)")
    fig.tight_layout()
    out.append((FIGURES[2], fig))
    return out


def pyplot_for(records: list[dict[str, Any]], out_dir: Path) -> Any:
    """matplotlib's pyplot drawing to files (no display), once there is something to plot; ``out_dir`` made.

    Example:
        >>> plt = pyplot_for(records, Path("runs/branin/plots"))  # doctest: +SKIP
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise RushConfigError("rushhpc plot needs matplotlib: pip install 'rushhpc[plot]'") from None
    if not records:
        raise RushConfigError("nothing to plot: no finished or failed evaluation yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    return plt


def plot(records: list[dict[str, Any]], metric: str, direction: str, out_dir: Path, title: str = "",
         yscale: str = "auto") -> list[Path]:
    """Write the three PNG files of `figures` into ``out_dir``; returns their paths.

    Example:
        >>> plot(*records_from_folder(Path("runs/branin"))[:1], "y", "minimize", Path("runs/branin/plots"))
    """
    plt = pyplot_for(records, out_dir)
    paths = []
    figs = figures(records, metric, direction, title=title, yscale=yscale)
    curves = fidelity_figure(records, metric, title=title)  # asha, hyperband: each configuration over fidelity
    figs += [curves] if curves is not None else []
    for name, fig in figs:
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


FIDELITY_FIGURE = "curves_over_fidelity.png"


def fidelity_figure(records: list[dict[str, Any]], metric: str, title: str = "") -> tuple[str, Any] | None:
    """Each configuration's curve of the metric over fidelity, for results with ``config`` and ``fidelity`` (asha,
    hyperband): one line per configuration through its finished evaluations, coloured by the highest rung it
    reached; failed evaluations are red marks at the foot of the axis. None for other results.

    Example:
        >>> name, fig = fidelity_figure(records, "loss")   # doctest: +SKIP
        >>> name
        'curves_over_fidelity.png'
    """
    if not any(r.get("config") is not None and r.get("fidelity") is not None for r in records):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[tuple[float, float, int]]] = {}
    failed: list[float] = []
    for r in records:
        if r.get("config") is None or r.get("fidelity") is None:
            continue
        v = _value(r)
        if v is None:
            if r.get("state") == TaskState.FAILED:
                failed.append(float(r["fidelity"]))
            continue
        curves.setdefault(str(r["config"]), []).append((float(r["fidelity"]), v, int(r.get("rung") or 0)))
    top = max((p[2] for pts in curves.values() for p in pts), default=0)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    shown: set[int] = set()
    for config, pts in sorted(curves.items(), key=lambda kv: max(p[2] for p in kv[1])):
        pts.sort()
        reached = max(p[2] for p in pts)
        label = f"reached rung {reached}" if reached not in shown else None
        shown.add(reached)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linewidth=1,
                color=cmap(reached / max(top, 1)), alpha=0.8, label=label, gid=config)
    if failed:
        ax.scatter(failed, [0.02] * len(failed), marker="x", color="tab:red", s=20, transform=ax.get_xaxis_transform(),
                   label=str(TaskState.FAILED), clip_on=False)
    fids = sorted({p[0] for pts in curves.values() for p in pts})
    if len(fids) > 1 and fids[-1] / max(fids[0], 1e-12) > 10:
        ax.set_xscale("log")
    scale, linthresh = choose_scale([p[1] for pts in curves.values() for p in pts])
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh)
    else:
        ax.set_yscale(scale)
    ax.set_xlabel("fidelity")
    ax.set_ylabel(metric + ("" if scale == "linear" else f" ({scale} scale)"))
    ax.set_title(title or f"{metric} over fidelity: {len(curves)} configurations")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return FIDELITY_FIGURE, fig
