"""Helpers shared by integration/test_command.py and unit/test_command_units.py."""

from __future__ import annotations

import stat

import pytest

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
