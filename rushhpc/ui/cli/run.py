"""``rushhpc worker`` (the worker entry point scripts run) and ``rushhpc script``."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rushhpc.errors import RushError
from rushhpc.launchers.registry import launchers
from rushhpc.ui.cli.common import add_redis_options


def _worker(args: argparse.Namespace) -> int:
    from rushhpc.core.spec import WorkerSpec
    from rushhpc.worker.main import run_worker

    # the loop arrives pickled by reference (module:function): its module is found on sys.path,
    # then in the current folder, as `rushhpc script` and `python -m rushhpc` find it
    add_current_folder()
    return run_worker(WorkerSpec(
        network_id=args.network, start_id=args.start_id, credentials=args.credentials,
        signing_key=args.signing_key, worker_id=args.worker_id,
        heartbeat_period=args.heartbeat_period, heartbeat_expire=args.heartbeat_expire, launcher=args.launcher,
        managed=args.managed, watch_pid=args.watch_pid, walltime=args.walltime, walltime_margin=args.walltime_margin,
    ))


def add_current_folder() -> None:
    """Put the current folder first on ``sys.path``, as ``python -m`` and a sweep do (the
    ``rushhpc`` console script starts without it), so ``mod:fn`` finds ``./mod.py``."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def import_object(spec: str) -> Any:
    """``package.module:function`` -> the function; the module is looked up in the current folder
    too (`add_current_folder`).

    Example:
        >>> import_object("rushhpc.worker.loops:queue_loop").__name__
        'queue_loop'
    """
    module, _, name = spec.partition(":")
    if not module or not name:
        raise RushError(f"expected MODULE:FUNCTION, got {spec!r}")
    add_current_folder()
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RushError(f"cannot import {spec}: {e} (looked in the current folder {os.getcwd()} and on "
                        "the Python path)") from None


def module_folder(spec: str) -> str | None:
    """The current folder when ``spec``'s module was found there (a worker started elsewhere, on
    another node, would not find it), else None."""
    top = sys.modules.get(spec.partition(":")[0].split(".")[0])
    path = getattr(top, "__file__", None)
    if not path:
        return None
    p = Path(path).resolve()
    folder = p.parent.parent if p.name == "__init__.py" else p.parent
    here = Path(os.getcwd()).resolve()
    return str(here) if folder == here else None


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` items, values read as YAML (``3`` is an int, ``null`` None)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise RushError(f"--set takes KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _script(args: argparse.Namespace) -> int:
    from rushhpc.manager.plan import current_plan
    from rushhpc.manager.rush import rsh
    from rushhpc.ui.cli.common import redis_from_args

    config = redis_from_args(args) if args.redis else None
    rush = rsh(args.network, config=config)
    loop = import_object(args.loop)
    options = parse_sets(args.set)
    launcher_options = parse_sets(args.option)
    # a loop from a module of the current folder travels by reference: the worker, started in another
    # folder or on another node, finds it with that folder on its PYTHONPATH (a path, nothing secret)
    folder = module_folder(args.loop)
    pythonpath = f'PYTHONPATH={shlex.quote(folder)}"${{PYTHONPATH:+:$PYTHONPATH}}"' if folder else ""
    if pythonpath and args.worker_type != "script":
        setup = launcher_options.get("setup", current_plan().launcher_options.get("setup"))
        setup = [setup] if isinstance(setup, str) else list(setup or [])
        launcher_options["setup"] = [f"export {pythonpath}", *setup]
    if launcher_options:
        options["launcher_options"] = launcher_options
    try:
        if args.worker_type == "script":
            command = rush.worker_script(loop, **options)
            print(f"{pythonpath} {command}" if pythonpath else command)
        else:
            print(rush.render_script(loop, n_workers=args.n_workers, worker_type=args.worker_type, **options), end="")
    except TypeError as e:  # the loop's arguments do not fit it: a Python TypeError, told in the CLI's words
        raise RushError(f"{e} On the command line a loop argument is --set KEY=VALUE (a YAML value).") from None
    return 0


def register(sub: Any) -> None:
    w = sub.add_parser("worker", help="run one worker of a network (what worker_script() prints)")
    w.add_argument("--network", required=True, help="network id")
    w.add_argument("--start-id", required=True, help="id of the worker configuration stored by the manager")
    w.add_argument("--credentials", help="0600 JSON file with the Redis URL (default: $RUSHHPC_REDIS_URL)")
    w.add_argument("--signing-key", metavar="FILE",
                   help="0600 file with the key that signs the worker configuration (default: "
                        "$RUSHHPC_SIGNING_KEY_FILE, else signing.key beside --credentials, else in the run directory)")
    w.add_argument("--worker-id", help="worker id (default: a new random id)")
    w.add_argument("--heartbeat-period", type=float, help="seconds between heartbeats (default 10)")
    w.add_argument("--heartbeat-expire", type=float, help="seconds until a silent worker is lost (default 60)")
    w.add_argument("--launcher", default="script", help=argparse.SUPPRESS)
    w.add_argument("--managed", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("--watch-pid", type=int, help=argparse.SUPPRESS)
    w.add_argument("--walltime", type=float, help="seconds the job may run; the worker stops taking tasks near the end")
    w.add_argument("--walltime-margin", type=float, help="seconds before the end to stop taking tasks")
    w.set_defaults(func=_worker)

    sc = sub.add_parser("script", help="print the exact batch script (or worker command) a start would use")
    sc.add_argument("loop", help="the worker loop, as MODULE:FUNCTION (e.g. rushhpc.worker.loops:queue_loop)")
    sc.add_argument("--network", "-n", help="network id (default: a new one)")
    add_redis_options(sc)
    sc.add_argument("--worker-type", default="slurm", choices=sorted({*launchers(), "script"} - {"local", "ssh"}))
    sc.add_argument("--n-workers", type=int, default=1)
    sc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a worker loop argument or option (YAML value)")
    sc.add_argument("--option", action="append", metavar="KEY=VALUE", help="a launcher option (time, partition, ...)")
    sc.set_defaults(func=_script)
