"""``rushhpc plot``: PNG files of a sweep or a network, with matplotlib (the ``plot`` extra).

Three figures: the best value over wall time, the best value over evaluations, and a
worker timeline (one row per worker, one bar per evaluation from its start to its end,
failures in red). The data come from a sweep's output folder (its ``journal.jsonl`` and
``config.yaml``) or from a network in Redis (finished and failed tasks; the objective is
the ``--metric`` output, ``y`` by default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import RushConfigError

FIGURES = ("best_over_time.png", "best_over_evaluations.png", "worker_timeline.png")


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
    for row in net.task_rows(["finished", "failed"]):
        v = row.get(metric)
        out.append({"state": row.get("state"), "value": v if isinstance(v, (int, float)) else None,
                    "worker_id": row.get("worker_id"), "started_at": row.get("started_at"),
                    "finished_at": row.get("finished_at")})
    return out


def _best_curve(records: list[dict[str, Any]], direction: str) -> tuple[list[float], list[int], list[float]]:
    """(finish times, evaluation numbers, best so far) over the finished records in finishing order."""
    done = [r for r in records if r.get("finished_at") is not None]
    done.sort(key=lambda r: float(r["finished_at"]))
    t0 = min((float(r["started_at"]) for r in done if r.get("started_at") is not None), default=0.0)
    times: list[float] = []
    evals: list[int] = []
    best: list[float] = []
    cur: float | None = None
    for i, r in enumerate(done, 1):
        v = r.get("value")
        if r.get("state") == "finished" and isinstance(v, (int, float)) and math.isfinite(v):
            cur = v if cur is None else (min(cur, v) if direction == "minimize" else max(cur, v))
        if cur is not None:
            times.append(float(r["finished_at"]) - t0)
            evals.append(i)
            best.append(cur)
    return times, evals, best


def plot(records: list[dict[str, Any]], metric: str, direction: str, out_dir: Path, title: str = "") -> list[Path]:
    """Write the three PNG files into ``out_dir``; returns their paths.

    Example:
        >>> plot(*records_from_folder(Path("runs/branin"))[:1], "y", "minimize", Path("runs/branin/plots"))
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
    times, evals, best = _best_curve(records, direction)
    label = f"best {metric} ({direction})"
    paths = []
    for name, xs, xlabel in ((FIGURES[0], times, "wall time (s)"), (FIGURES[1], evals, "evaluations")):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.step(xs, best, where="post", color="tab:blue")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.set_title(title or label)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    timed = [r for r in records if r.get("started_at") is not None and r.get("finished_at") is not None]
    workers = sorted({str(r.get("worker_id")) for r in timed})
    t0 = min((float(r["started_at"]) for r in timed), default=0.0)
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.4 * len(workers) + 1)), dpi=100)
    for y, wid in enumerate(workers):
        mine = [r for r in timed if str(r.get("worker_id")) == wid]
        bars = [(float(r["started_at"]) - t0, max(1e-3, float(r["finished_at"]) - float(r["started_at"]))) for r in mine]
        colors = ["tab:red" if r.get("state") == "failed" else "tab:green" for r in mine]
        ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=colors)
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels(workers)
    ax.set_xlabel("wall time (s)")
    ax.set_title("worker timeline (green: finished, red: failed)")
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES[2])
    plt.close(fig)
    paths.append(out_dir / FIGURES[2])
    return paths
