"""rushhpc plot: PNG files from a sweep's output folder and from a network, opened and checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from support import REPO

from rushhpc import RushWorker
from rushhpc.ui.plot import FIGURES


def _check_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 150
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # not a blank canvas


def test_plot_a_sweep_folder(tmp_path):
    out = tmp_path / "b"
    run = subprocess.run([sys.executable, "-m", "rushhpc", "sweep", "examples/sweep_branin.yaml", "budget.evaluations=20",
                          f"output={out}"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    plot = subprocess.run([sys.executable, "-m", "rushhpc", "plot", str(out), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert plot.returncode == 0, plot.stderr
    files = [Path(f) for f in json.loads(plot.stdout)["files"]]
    assert [f.name for f in files] == list(FIGURES) and all(f.parent == out / "plots" for f in files)
    for f in files:
        _check_png(f)


def test_plot_a_network(rush, config, tmp_path):
    w = RushWorker(rush.network_id, config=config)
    rush.push_tasks([{"x": i} for i in range(6)])
    for i in range(6):
        t = w.pop_task(timeout=0)
        if i == 3:
            w.fail_tasks([t["key"]], ["boom"])
        else:
            w.finish_tasks([t["key"]], [{"loss": 10 - i}])
    out = tmp_path / "p"
    plot = subprocess.run([sys.executable, "-m", "rushhpc", "plot", "-n", rush.network_id, "--metric", "loss",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, RUSHHPC_REDIS_URL=config.url()))
    assert plot.returncode == 0, plot.stderr
    for name in FIGURES:
        _check_png(out / name)
    w.close()


def test_plot_errors(tmp_path):
    run = subprocess.run([sys.executable, "-m", "rushhpc", "plot", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "not a sweep output folder" in run.stderr
