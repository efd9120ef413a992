"""Programs as objectives (issue 17): real programs, outside the package, run as subprocesses.

A shell script and a Python script stand in for a compiled simulation and a training script.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from rushhpc.worker.command import (
    TrialContext,
)

SIM = """#!/bin/sh
# a "compiled" simulation: reads -T and --out, writes a result file and prints a log line
T=""; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    -T) T="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
echo "energy: $T.5 steps: 100"
printf '{"energy": %s, "cwd": "%s"}\\n' "$T" "$(pwd)" > "$OUT/result.json"
"""

TRAIN = """
import json, os, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args.get("--fail"):
    print("diverged at step 3", file=sys.stderr)
    sys.exit(int(args["--fail"]))
print("epoch 1")
print(json.dumps({"loss": float(args["--lr"]) * 2, "argv": sys.argv[1:],
                  "omp": os.environ.get("OMP_NUM_THREADS"), "eval": os.environ["RUSHHPC_EVAL"],
                  "params": json.loads(os.environ["RUSHHPC_PARAMS"])}))
"""

FORKER = """
import os, sys, time
pid = os.fork()
if pid == 0:  # the child: would outlive its parent without its process group being stopped
    time.sleep(300)
    os._exit(0)
open(sys.argv[1], "w").write(str(pid))
if sys.argv[2] == "hang":
    time.sleep(300)
print(1.5)
"""


@pytest.fixture
def programs(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    sim = folder / "sim"
    sim.write_text(SIM)
    sim.chmod(sim.stat().st_mode | stat.S_IXUSR)
    (folder / "train.py").write_text(TRAIN)
    (folder / "forker.py").write_text(FORKER)
    return folder


def ctx(programs: Path, n: int = 0) -> TrialContext:
    return TrialContext(trial_dir=programs / "out" / "trials" / str(n), eval=n, seed=11, worker_id="w-1",
                        base_dir=programs)


def pid_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie whose parent has not reaped it yet is gone for our purpose
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------- the manager API
def test_command_loop_runs_a_program_per_queued_task(rush, programs, monkeypatch):
    from rushhpc import command_loop

    monkeypatch.chdir(programs)
    rush.start_local_workers(command_loop, n_workers=2, command="./sim -T {T} --out {trial_dir}",
                             result="result.json", timeout=60, stop_when_empty=False)
    keys = rush.push_tasks([{"T": t} for t in (250, 300, 350)] + [{"X": 1}])
    rush.wait_for_tasks(keys, timeout=60)
    done = rush.fetch_finished_tasks()
    assert sorted(done["energy"]) == [250, 300, 350] and set(done["cwd"]) == {str(programs)}
    assert all((programs / "trials" / k / "stdout.txt").exists() for k in done["keys"])
    failed = rush.fetch_failed_tasks()
    assert len(failed) == 1 and "have no 'T' for the placeholder {T}" in failed["condition"].iloc[0]
    rush.stop_workers(type="kill")
