"""ASHA with a program as the objective, through the real CLI (issue 19, part 1): the command gets the rung's
fidelity as ``{fidelity}`` and the configuration's folder as ``{checkpoint_dir}``; the program (a Python script run
as a subprocess) resumes from the checkpoint it wrote at the lower rung and prints its metric on stdout, the way
program objectives report one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from support.sweeps import run

from rushhpc.sweeps.strategies.asha import rungs

TRAIN = """
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
lr, epochs, ckpt = float(args["--lr"]), int(args["--epochs"]), args["--checkpoint"]
path = os.path.join(ckpt, "model.json")
found = json.load(open(path))["epochs"] if os.path.exists(path) else 0
time.sleep(0.01 * (epochs - found))
json.dump({"epochs": epochs}, open(path, "w"))
print(f"trained {epochs - found} epochs")
print(json.dumps({"loss": (lr - 0.3) ** 2 + 1 / (1 + epochs), "found": found, "trial": os.environ["RUSHHPC_TRIAL_DIR"]}))
"""

ETA, FMIN, FMAX = 3, 1, 9


def test_a_program_resumes_from_its_checkpoint_at_each_rung(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    doc = {
        "objective": {"command": ["python3", "train.py", "--lr", "{lr}", "--epochs", "{fidelity}",
                                  "--checkpoint", "{checkpoint_dir}"]},
        "metric": "loss", "space": {"lr": {"type": "float", "low": 0, "high": 1}},
        "fidelity": {"name": "epochs", "min": FMIN, "max": FMAX}, "strategy": {"name": "asha", "eta": ETA},
        "budget": {"evaluations": 30}, "workers": {"n": 2, "launcher": "local"}, "redis": "embedded",
        "output": "runs/out", "seed": 5, "progress": "none",
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run(tmp_path, "sweep.yaml", timeout=180)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "runs" / "out"
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and all(r["state"] == "finished" for r in rows)
    fids = rungs(FMIN, FMAX, ETA)
    promoted = [r for r in rows if int(r["rung"]) > 0]
    assert promoted, "no promotion in 30 evaluations"
    for r in rows:
        rung = int(r["rung"])
        assert int(float(r["fidelity"])) == fids[rung]
        # every evaluation above rung 0 found the checkpoint its configuration wrote at the rung below
        assert int(float(r["found"])) == (fids[rung - 1] if rung > 0 else 0), r
        # its trial folder: one per configuration and rung, with the program's stdout
        trial = Path(r["trial"])
        assert trial == (out / "trials" / f"{r['config']}-r{rung}").resolve()
        assert json.loads((trial / "stdout.txt").read_text().splitlines()[-1])["found"] == int(float(r["found"]))
    assert {p.name for p in (out / "checkpoints").iterdir()} == {r["config"] for r in rows}
