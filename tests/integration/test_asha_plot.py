"""rushhpc plot of an asha sweep: besides the three usual figures, each configuration's curve over fidelity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from support import REPO

from rushhpc.ui.plot import FIDELITY_FIGURE, FIGURES, fidelity_figure, records_from_folder


def test_plot_an_asha_sweep_draws_each_configuration_over_fidelity(tmp_path):
    out = tmp_path / "a"
    run = subprocess.run([sys.executable, "-m", "rushhpc", "sweep", "examples/sweep_asha.yaml", "budget.evaluations=30",
                          f"output={out}"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    plot = subprocess.run([sys.executable, "-m", "rushhpc", "plot", str(out), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert plot.returncode == 0, plot.stderr
    files = [Path(f) for f in json.loads(plot.stdout)["files"]]
    assert [f.name for f in files] == [*FIGURES, FIDELITY_FIGURE]
    with Image.open(out / "plots" / FIDELITY_FIGURE) as im:
        assert im.format == "PNG" and im.size[0] >= 300
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100
    # what the figure draws: one curve per configuration, through its evaluations' fidelities
    records, metric, direction = records_from_folder(out)
    name, fig = fidelity_figure(records, metric)
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.get_lines()}
    configs = {r["config"] for r in records if r["state"] == "finished"}
    assert set(lines) == configs
    for r in records:
        xs = list(lines[r["config"]].get_xdata())
        assert float(r["fidelity"]) in xs
    assert ax.get_xlabel() == "fidelity" and metric in ax.get_title()
    # results without a fidelity: no such figure
    assert fidelity_figure([{k: v for k, v in r.items() if k not in ("config", "fidelity")} for r in records],
                           metric) is None
