"""``rushhpc sweep CONFIG.yaml [key=value ...] [--resume]``: registered by `rushhpc.ui.cli`."""

from __future__ import annotations

import argparse

EPILOG = """\
overrides set any field by its dotted path (the value is YAML):
  budget.evaluations=30  workers.n=8  strategy=grid  strategy.resolution=7
  space.x1.high=20  +space.x3={type: int, low: 1, high: 4}  ~space.x3
exit codes: 0 the budget was completed (failed evaluations included),
            1 the sweep could not complete (max_failures, no workers, Redis lost),
            2 invalid config, or the output folder is in use by another sweep (nothing started),
            3 every evaluation failed (the summary names the first error),
            130 interrupted (Ctrl-C; results are kept, --resume continues)
docs: docs/sweeps.md"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep", help="run a parameter sweep described by a YAML file",
        description="Run a parameter sweep described by a YAML file: random, grid, sobol/halton/lhs, or tpe.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="the sweep file (YAML)")
    # REMAINDER: options may come after the overrides too (argparse's "*" stops at the first option)
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="override a field by its dotted path")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in the output folder (a new sweep when the folder holds none)")
    p.add_argument("--check", action="store_true", help="validate the config, print it resolved, start nothing")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rushhpc.sweeps.config import SweepConfigError, load_config

    overrides = []
    for item in args.overrides:
        if item == "--resume":
            args.resume = True
        elif item == "--check":
            args.check = True
        elif item.startswith("-"):
            raise SweepConfigError(f"unknown option {item!r}; rushhpc sweep takes --resume and --check")
        else:
            overrides.append(item)
    args.overrides = overrides

    if args.check:
        cfg = load_config(args.config, args.overrides)
        print(cfg.to_yaml(), end="")
        return 0
    from rushhpc.sweeps.engine import run_sweep

    return run_sweep(args.config, args.overrides, resume=args.resume).exit_code
