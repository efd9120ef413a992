"""Run the rushhpc benchmarks: one command, one Redis, one table.

    python bench/run.py                 # full run (a few minutes)
    python bench/run.py --quick         # smoke run, under two minutes (CI)
    python bench/run.py --only ops,fetch --json /tmp/ops.json

Starts a private redis-server on a free loopback port, measures the floor
(a PING round trip) first, then each family on an emptied Redis, prints a
Markdown table on stdout (progress goes to stderr), writes the rows and the
machine description as JSON, and stops the server. Exit code 0 unless a
family crashed; a missed target is reported, never an error (this is a
benchmark, not a test).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, Context, RedisServer, Row, log, make_workdir

FAMILIES = ["floor", "ops", "loops", "utilisation", "fetch", "monitoring", "workers", "peers"]


def machine_info(server: RedisServer) -> dict:
    """What the numbers were measured on."""
    import redis

    import rushhpc

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("rq", "optuna", "dramatiq", "celery", "hiredis", "pandas"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": server.version,
        "redis_py": redis.__version__,
        "rushhpc": rushhpc.__version__,
        **{f"{k}_version": v for k, v in versions.items()},
    }


def fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def cell(text: str) -> str:
    """Text safe for one Markdown table cell."""
    return " / ".join(line.strip() for line in str(text).splitlines() if line.strip()).replace("|", "\\|")


def markdown(rows: list[Row], info: dict, quick: bool) -> str:
    """The results table plus the targets list, as Markdown."""
    lines = [
        (
            f"rushhpc benchmarks ({'quick' if quick else 'full'} run), {info['date']}: {info['nproc']} cores, "
            f"{info['cpu']}, Redis {info['redis_server']}, Python {info['python']}, redis-py {info['redis_py']}"
        ),
        "",
        "| Family | Measurement | Median | p99 | Unit | Ratio | Ratio of | Target | Met | Notes |",
        "| --- | --- | ---: | ---: | --- | ---: | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**MISSED**")
        value = fmt(r.value) if r.value is not None else "n/a"
        lines.append(
            f"| {r.family} | {r.name} | {value} | {fmt(r.p99)} | {r.unit} | {fmt(r.ratio)} | {r.ratio_of} | "
            f"{r.target} | {met} | {cell(r.note)} |"
        )
    targets = [r for r in rows if r.target]
    if targets:
        lines += ["", "Targets:", ""]
        for r in targets:
            state = "n/a" if r.met is None else ("met" if r.met else "MISSED")
            shown = fmt(r.ratio) if r.ratio is not None else fmt(r.value)
            lines.append(f"- {state}: {r.family} / {r.name}: {shown} ({r.target})")
    return "\n".join(lines)


def run_family(name: str, ctx: Context) -> list[Row]:
    module = importlib.import_module(name)
    t0 = time.monotonic()
    log(f"{name} ...")
    rows = module.run(ctx)
    log(f"{name} done in {time.monotonic() - t0:.1f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts and shorter windows (CI smoke run)")
    ap.add_argument("--json", default=None, help="where to write the results (default bench/results/latest.json, "
                                                 "or quick.json with --quick)")
    ap.add_argument("--only", default="", help=f"comma-separated families among {','.join(FAMILIES)} "
                                               "(the floor always runs)")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="skip the families not started after this many seconds (default 600, quick 110)")
    args = ap.parse_args(argv)

    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = [f for f in only if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose among {FAMILIES}")
    families = [f for f in FAMILIES if f == "floor" or not only or f in only]
    limit = args.time_limit or (110.0 if args.quick else 600.0)

    # rushhpc warns when the bench kills its workers at the end of a measurement: expected here
    logging.getLogger("rushhpc").setLevel(logging.ERROR)
    workdir = make_workdir()
    os.environ["RUSHHPC_RUN_DIR"] = str(workdir / "runs")
    for var in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG"):
        os.environ.pop(var, None)

    t_start = time.monotonic()
    server = RedisServer(workdir)
    ctx = Context(server=server, quick=args.quick, workdir=workdir, deadline=t_start + limit)
    rows: list[Row] = []
    crashed: list[str] = []
    try:
        info = machine_info(server)
        for name in families:
            if name != "floor" and time.monotonic() > ctx.deadline:
                rows.append(Row(name, "(family skipped)", None, "", note=f"time limit of {limit:g} s reached"))
                continue
            server.flushall()
            try:
                rows += run_family(name, ctx)
            except Exception as e:
                if name == "floor":
                    raise
                crashed.append(name)
                traceback.print_exc()
                rows.append(Row(name, "(family crashed)", None, "", note=f"{type(e).__name__}: {e}"))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    info["total_seconds"] = round(time.monotonic() - t_start, 1)
    info["mode"] = "quick" if args.quick else "full"

    table = markdown(rows, info, args.quick)
    print(table)
    out = Path(args.json) if args.json else BENCH_DIR / "results" / ("quick.json" if args.quick else "latest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "floor_us": ctx.floor_us, "floor_pool_us": ctx.floor_pool_us,
                               "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    log(f"total {info['total_seconds']} s; JSON in {out}")
    if crashed:
        log(f"families that crashed: {', '.join(crashed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
