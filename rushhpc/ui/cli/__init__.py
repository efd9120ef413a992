"""The ``rushhpc`` command line (``python -m rushhpc``): one entry point, a module per group.

- `rushhpc.ui.cli.run`: ``worker`` (what batch scripts run), ``script`` (print a batch script)
- `rushhpc.ui.cli.inspect`: ``networks``, ``workers``, ``tasks``, ``logs``, ``top`` (read only)
- `rushhpc.ui.cli.control`: ``monitor``, ``stop``, ``reset`` (attach a manager)
- `rushhpc.ui.cli.plot_cmd`: ``plot`` (PNG files, `rushhpc.ui.plot`)
- `rushhpc.ui.cli.redis_cmd`: ``redis start|stop|status|user`` (a Redis for a cluster, `rushhpc.server.service`)
- `rushhpc.sweeps.cli`: ``sweep`` (YAML sweeps, `rushhpc.sweeps`)
- `rushhpc.ui.cli.common`: where Redis is, which network, tables and JSON

Exit codes: 0 ok; 1 nothing done (a refused confirmation, an unmet budget); 2 an error,
with a one-line cause on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

import redis

from rushhpc._version import __version__
from rushhpc.errors import RushError
from rushhpc.store.diagnostics import in_words_of


def build_parser(only_worker: bool = False) -> argparse.ArgumentParser:
    """The parser of every command; ``only_worker``: of ``worker`` and ``script`` alone.

    The command modules are imported here, not at the top: a worker process (``rushhpc
    worker``, one per core of a node) then loads none of the other commands' modules (the
    Redis server's, the dashboard's, the sweeps', PyYAML, psutil), about 1 MiB resident each
    (issue 12: memory per worker).
    """
    from rushhpc.ui.cli import run

    parser = argparse.ArgumentParser(prog="rushhpc", description="Decentralized parallel computing on HPC clusters.")
    parser.add_argument("--version", action="version", version=f"rushhpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.register(sub)
    if only_worker:
        return parser
    from rushhpc.sweeps.cli import add_parser as add_sweep_parser
    from rushhpc.ui.cli import control, dashboard_cmd, inspect, plot_cmd, redis_cmd

    inspect.register(sub)
    control.register(sub)
    add_sweep_parser(sub)  # rushhpc sweep: rushhpc/sweeps/cli.py
    plot_cmd.register(sub)
    redis_cmd.register(sub)
    dashboard_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Example:
        >>> main(["networks", "--json"])
    """
    args_in = sys.argv[1:] if argv is None else argv
    args = build_parser(only_worker=args_in[:1] == ["worker"]).parse_args(argv)
    try:
        return int(args.func(args))
    except RushError as e:
        # a Redis error raised in Python's words (redis_config(password_file=...)) is told in the
        # words of the command line (--password-file), or of the sweep file for `rushhpc sweep`
        print(f"rushhpc: error: {in_words_of(e, 'sweep' if args.command == 'sweep' else 'cli')}", file=sys.stderr)
        return 2
    except redis.exceptions.NoPermissionError as e:
        print(f"rushhpc: error: Redis refused a command to this user ({e}): an ACL user made for one network "
              "(rushhpc redis user add) can read and change only that network", file=sys.stderr)
        return 2
    except redis.RedisError as e:
        print(f"rushhpc: error: Redis: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `rushhpc logs | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
