"""``rushhpc plot`` for a sweep with several metrics: its Pareto front and its hypervolume over evaluations
(with the worker timeline of `rushhpc.ui.plot`), from the sweep's output folder.

Example:
    >>> plot_pareto(records, multi_objective_of(Path("runs/mo")), Path("runs/mo/plots"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rushhpc.ui.plot import FIGURES, _in_order, figures, pyplot_for

PARETO_FIGURES = ("pareto_front.png", "hypervolume_over_evaluations.png")


def multi_objective_of(folder: Path) -> dict[str, Any] | None:
    """The objectives of a sweep folder with several metrics (its config.yaml: ``metric`` a list,
    ``direction``, ``constraints``, ``reference_point``), None for a sweep of one metric."""
    import yaml

    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(cfg.get("metric"), list) or len(cfg["metric"]) < 2:
        return None
    return {k: cfg.get(k) for k in ("metric", "direction", "constraints", "reference_point")}


def pareto_figures(records: list[dict[str, Any]], objectives: dict[str, Any], title: str = "") -> list[tuple[str, Any]]:
    """The front of a sweep with several metrics (the first two metrics' plane: every finished evaluation a
    grey point, infeasible ones red crosses, the front blue with its staircase, the reference point) and the
    hypervolume of the feasible front over evaluations (in finishing order, against the final reference point).

    Example:
        >>> [name for name, fig in pareto_figures(records, {"metric": ["loss", "latency"]})]  # doctest: +SKIP
        ['pareto_front.png', 'hypervolume_over_evaluations.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rushhpc.sweeps import pareto
    from rushhpc.sweeps.front import Objectives

    obj = Objectives({k: v for k, v in objectives.items() if v is not None})
    ordered = [r for _, _, r in _in_order(records)]
    for r in ordered:
        obj.add(r)
    m0, m1 = obj.metrics[0], obj.metrics[1]
    done = [(r, v) for r in ordered if (v := obj.values(r)) is not None]
    ok = [v for r, v in done if obj.feasible(r)]
    bad = [v for r, v in done if not obj.feasible(r)]
    front = sorted((v for v in (obj.values(r) for r in obj.front) if v is not None), key=lambda v: v[0])
    ref, source = obj.reference()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.scatter([v[0] for v in ok], [v[1] for v in ok], s=12, color="tab:gray", alpha=0.6, label="feasible")
    if bad:
        ax.scatter([v[0] for v in bad], [v[1] for v in bad], s=20, marker="x", color="tab:red", label="infeasible")
    if front:
        ax.scatter([v[0] for v in front], [v[1] for v in front], s=30, color="tab:blue", zorder=3,
                   label=f"Pareto front ({len(front)})")
        if len(obj.metrics) == 2:
            ax.step([v[0] for v in front], [v[1] for v in front], where="post" if obj.directions[0] == "minimize"
                    else "pre", color="tab:blue", alpha=0.5)
    if ref is not None:
        ax.scatter([ref[0]], [ref[1]], marker="*", s=80, color="black", label=f"reference point ({source})")
    ax.set_xlabel(f"{m0} ({obj.directions[0]})")
    ax.set_ylabel(f"{m1} ({obj.directions[1]})")
    more = f" (first two of {len(obj.metrics)} metrics)" if len(obj.metrics) > 2 else ""
    ax.set_title(title or f"Pareto front{more}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = [(PARETO_FIGURES[0], fig)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if ref is not None:
        pts = [pareto.to_min(v, obj.directions) if (v := obj.values(r)) is not None and obj.feasible(r) else None
               for r in ordered]
        curve = pareto.hypervolume_curve(pts, pareto.to_min(ref, obj.directions))
        ax.step(range(1, len(curve) + 1), curve, where="post", color="tab:blue")
    ax.set_xlabel("evaluations (in finishing order)")
    ax.set_ylabel("hypervolume")
    ax.set_title(title or f"hypervolume of the feasible front ({', '.join(obj.metrics)}; reference point {source})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.append((PARETO_FIGURES[1], fig))
    return out


def plot_pareto(records: list[dict[str, Any]], objectives: dict[str, Any], out_dir: Path, title: str = "",
                yscale: str = "auto") -> list[Path]:
    """The files of a sweep with several metrics: `pareto_figures` and the worker timeline of `figures`.

    Example:
        >>> plot_pareto(records, multi_objective_of(Path("runs/mo")), Path("runs/mo/plots"))  # doctest: +SKIP
    """
    plt = pyplot_for(records, out_dir)
    paths = []
    figs = pareto_figures(records, objectives, title=title)
    for name, fig in figures(records, str(objectives["metric"][0]), "minimize", title, yscale):
        if name == FIGURES[2]:  # the worker timeline; the best-so-far plots are of one metric
            figs.append((name, fig))
        else:
            plt.close(fig)
    for name, fig in figs:
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths
