"""``rushhpc plot``: PNG files from a sweep's output folder or a network (`rushhpc.ui.plot`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rushhpc.errors import RushConfigError
from rushhpc.ui.cli.common import add_network_options, open_network, print_json


def _plot(args: argparse.Namespace) -> int:
    from rushhpc.ui.pareto_plot import multi_objective_of, plot_pareto
    from rushhpc.ui.plot import plot, records_from_folder, records_from_network

    if args.folder and args.network:
        raise RushConfigError("plot a sweep's output folder or a network (--network), not both")
    if args.folder:
        folder = Path(args.folder)
        records, metric, direction = records_from_folder(folder)
        metric = args.metric or metric
        direction = args.direction or direction
        out = Path(args.out) if args.out else folder / "plots"
        title = folder.name
    else:
        net = open_network(args)
        metric = args.metric or "y"
        direction = args.direction or "minimize"
        records = records_from_network(net, metric)
        out = Path(args.out or f"{net.network_id}-plots")
        title = net.network_id
    multi = multi_objective_of(Path(args.folder)) if args.folder and not args.metric else None
    if multi is not None:  # several metrics: the front and the hypervolume over evaluations
        paths = plot_pareto(records, multi, out, title=title, yscale=args.yscale)
    else:
        paths = plot(records, metric, direction, out, title=title, yscale=args.yscale)
    if args.json:
        print_json({"files": [str(p) for p in paths]})
    else:
        for p in paths:
            print(p)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("plot", help="PNG files: best value over time and evaluations, worker timeline")
    p.add_argument("folder", nargs="?", help="a sweep's output folder (or --network NAME)")
    add_network_options(p)
    p.add_argument("--metric", help="the output to plot (default: the sweep's metric, or y)")
    p.add_argument("--direction", choices=["minimize", "maximize"], help="default: the sweep's, or minimize")
    p.add_argument("--yscale", choices=["auto", "linear", "log", "symlog"], default="auto",
                   help="the value axis of the best-so-far plots (default auto: log or symlog when the values "
                        "span more than 1.5 decades, else linear)")
    p.add_argument("--out", help="folder for the PNG files (default: FOLDER/plots, or NETWORK-plots)")
    p.set_defaults(func=_plot)
