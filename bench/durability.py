"""What durability costs: a task's pop + finish with no persistence, AOF fsync every second,
and AOF fsync always (``rushhpc redis start --appendonly --fsync always``).

One in-process worker pops and finishes no-op tasks against three private Redis servers; the
configurations alternate in rounds so that they see the same machine. Reported: the median and
p99 of the finish call (what a worker waits for before its result is acknowledged) and of a
whole pop + finish, and the ratio to no persistence. With ``fsync always`` Redis fsyncs the
append-only file before it answers, so an acknowledged result survives a crash of the machine;
with ``everysec`` up to a second of results may be lost. (WAITAOF, which lets a client wait for
the fsync of its own writes only, needs Redis 7.2; this machine's is 7.0.)

    python bench/durability.py [--tasks 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RedisServer, log, make_workdir, median, p99  # noqa: E402

import rushhpc  # noqa: E402

CONFIGS = {
    "no persistence": (),
    "AOF, fsync everysec": ("appendonly yes", "appendfsync everysec"),
    "AOF, fsync always": ("appendonly yes", "appendfsync always"),
}


def one_round(server: RedisServer, n: int) -> tuple[list[float], list[float]]:
    r = rushhpc.Rush(f"dur-{uuid.uuid4().hex[:6]}", config=server.config())
    w = rushhpc.RushWorker(r.network_id, config=server.config())
    try:
        r.push_tasks([{"x": i} for i in range(n)])
        finish, both = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            task = w.pop_task(timeout=0)
            t1 = time.perf_counter()
            w.finish_tasks([task["key"]], [{"y": 0}])
            t2 = time.perf_counter()
            finish.append(t2 - t1)
            both.append(t2 - t0)
        assert r.n_finished_tasks == n
        return finish, both
    finally:
        w.close()
        r.reset()
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    dirs = {name: Path(make_workdir()) for name in CONFIGS}
    servers = {name: RedisServer(dirs[name], extra) for name, extra in CONFIGS.items()}
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in CONFIGS}
    try:
        for rnd in range(args.rounds):
            for name, server in servers.items():
                log(f"round {rnd + 1}: {name}")
                f, b = one_round(server, args.tasks)
                samples[name][0].extend(f)
                samples[name][1].extend(b)
    finally:
        for s in servers.values():
            s.stop()
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    load = os.getloadavg()
    print(f"\ndurability: {args.tasks} tasks x {args.rounds} rounds, one in-process worker, "
          f"Redis {servers['no persistence'].version}; load average {load[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'configuration':<22}{'finish median us':>18}{'finish p99 us':>15}{'pop+finish median us':>22}"
          f"{'ratio':>8}")
    base = median(samples["no persistence"][1])
    for name, (f, b) in samples.items():
        print(f"{name:<22}{median(f) * 1e6:>18.0f}{p99(f) * 1e6:>15.0f}{median(b) * 1e6:>22.0f}{median(b) / base:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
