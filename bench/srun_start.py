"""Starting workers over the nodes of one allocation (issue 17, part 5): 24 srun workers on the test
cluster's 3 nodes against 24 local workers, side by side in one run.

    python bench/srun_start.py                 # submits itself: sbatch --wait -N 3, then prints the table
    python bench/srun_start.py --quick         # CI smoke: 6 workers, one round, deadlines on every wait
    python bench/srun_start.py --workers 24 --rounds 3 --json /tmp/srun.json

Inside the allocation it starts a private Redis on the batch node's reachable address (as a sweep does),
then, alternately for each round, ``start_workers(worker_type="srun")`` (one srun step of N tasks,
``overcommit``: the test cluster's nodes have 4 CPUs each) and ``start_local_workers`` on the batch node,
each timed from the call until every worker has registered (`wait_for_workers`), then killed and waited
for. The test cluster's three nodes are slurmds on this one host, so both forms share its cores: the
difference is srun's step creation and launch, not more hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def noop_loop(rush) -> None:  # the worker registers, then waits to be killed
    while not rush.terminated:
        time.sleep(0.2)


def measure(n: int, rounds: int, deadline: float) -> dict:
    from rushhpc import rsh, rush_plan
    from rushhpc.launchers.srun import reachable_address
    from rushhpc.server.embedded import embedded_redis

    sys.path.insert(0, str(HERE))  # noop_loop is pickled by reference to this module
    import srun_start  # noqa: F401

    cfg = embedded_redis(reachable_address())
    rush_plan(worker_type="srun", launcher_options={"overcommit": True})
    rush = rsh("bench-srun", config=cfg)
    times: dict[str, list[float]] = {"srun": [], "local": []}
    nodes: set[str] = set()
    for _ in range(rounds):
        for kind in ("srun", "local"):
            left = deadline - time.monotonic()
            if left < 10:
                raise SystemExit(f"out of time before the {kind} round")
            t0 = time.monotonic()
            start = rush.start_workers if kind == "srun" else rush.start_local_workers
            ids = start(srun_start.noop_loop, n_workers=n)
            rush.wait_for_workers(worker_ids=ids, timeout=min(120, left - 5))
            times[kind].append(time.monotonic() - t0)
            if kind == "srun":
                nodes |= set(rush.worker_info.set_index("worker_id").loc[ids].node)
            rush.stop_workers(type="kill", worker_ids=ids)
    rush.reset()
    return {"workers": n, "rounds": rounds, "nodes": sorted(nodes), "job": os.environ.get("SLURM_JOB_ID"),
            "srun_s": times["srun"], "local_s": times["local"]}


def table(r: dict) -> str:
    lines = [f"start of {r['workers']} workers until all registered (job {r['job']}, srun nodes: "
             f"{', '.join(r['nodes'])}; {r['rounds']} round(s))",
             f"{'launcher':<10}{'median s':>10}{'min s':>8}{'max s':>8}"]
    for kind in ("srun", "local"):
        xs = r[f"{kind}_s"]
        lines.append(f"{kind:<10}{statistics.median(xs):>10.2f}{min(xs):>8.2f}{max(xs):>8.2f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="6 workers, one round (CI smoke, under 60 s)")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--timeout", type=float, default=300, help="deadline of the whole run (s)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.workers, args.rounds, args.timeout = 6, 1, min(args.timeout, 45)
    if args.inside:
        result = measure(args.workers, args.rounds, time.monotonic() + args.timeout - 5)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="srun-bench-") as tmp:
        out = Path(tmp) / "job.out"
        env = dict(os.environ, PYTHONPATH=f"{HERE.parent}:{HERE}:{os.environ.get('PYTHONPATH', '')}",
                   RUSHHPC_RUN_DIR=str(Path(tmp) / "runs"))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--inside", "--workers", str(args.workers),
               "--rounds", str(args.rounds), "--timeout", str(args.timeout)]
        minutes = max(2, int(args.timeout // 60) + 1)
        try:
            # --mem: the batch step holds the manager, Redis and the local workers (about 40 MB each)
            run = subprocess.run(["sbatch", "--wait", "-N", "3", "--mem=3G", f"--time={minutes}", f"--output={out}",
                                  "--export=ALL", "--job-name=bench-srun", "--wrap", " ".join(cmd)],
                                 env=env, capture_output=True, text=True, timeout=args.timeout + 10)
        except FileNotFoundError:
            print("sbatch not found: run this with the test cluster up (eval \"$(scripts/slurm-cluster.sh env)\")")
            return 2
        except subprocess.TimeoutExpired:
            print(f"the benchmark job did not end within {args.timeout + 10:g} s")
            return 1
        log = out.read_text() if out.exists() else ""
        if run.returncode != 0 or "RESULT " not in log:
            print(f"the benchmark job failed (sbatch exit {run.returncode}): {run.stderr.strip()}\n{log[-3000:]}")
            return 1
        result = json.loads(log.split("RESULT ", 1)[1].splitlines()[0])
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
