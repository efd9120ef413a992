"""The dashboard on an ASHA sweep (issue 19): the "Curves over fidelity" panel and its JSON
(`/api/{net}/fidelity`), and the "Best so far" panel of a sweep (whose outputs sit under ``outputs``), checked
against the sweep's own results.csv.

The sweep is examples/sweep_asha.yaml with a small budget, run through the real CLI on the test Redis. A sweep
deletes its network at its end, so the test stops the manager (SIGSTOP, by pid) once its workers run, then opens
the gate the example's objective waits behind here: ASHA's workers claim their evaluations themselves and stop at
the budget, so the whole budget finishes in Redis while the manager waits. The dashboard (a subprocess, by pid)
and headless Chromium look at that network; then the manager continues (SIGCONT), ingests the same evaluations
and writes results.csv, which the test compares with what the page showed. Every process started here is
stopped by pid or process group.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import uuid

import pandas as pd
import psutil
import pytest
import yaml
from support import REPO, wait_until
from support.sweeps import sweep_cmd
from test_dashboard import browser, get_json, new_page, password_file, shot, start_dashboard  # noqa: F401
from test_dashboard_pareto import two_metric_sweep  # noqa: F401

import rushhpc
from rushhpc.network.view import Network

EVALS = 40
GATED = """

def train(lr, layers, epochs, checkpoint_dir=None):
    gate = Path({gate!r})
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return _train(lr, layers, epochs, checkpoint_dir)
"""


def _stop_group(proc: subprocess.Popen) -> None:
    """The sweep's manager and everything it started (its session), by process group."""
    if proc.poll() is not None:
        return
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=20)
    for c in alive:
        c.kill()


@pytest.fixture(params=["asha", "hyperband"])
def paused_asha_sweep(request, tmp_path, config, password_file):  # noqa: F811
    """examples/sweep_asha.yaml (2 workers, 40 evaluations; its strategy asha or hyperband) on the test Redis, its
    manager stopped once its workers run; yields (strategy, network id, resume): resume() continues the manager
    and returns its results.csv."""
    doc = yaml.safe_load((REPO / "examples" / "sweep_asha.yaml").read_text())
    doc["strategy"]["name"] = request.param
    # the example's objective, gated: no evaluation starts before the manager is stopped (else 40 quick
    # evaluations could all finish, and the network be deleted, before the test stops it)
    gate = tmp_path / "go"
    example = (REPO / "examples" / "asha_functions.py").read_text().replace("def train(", "def _train(")
    (tmp_path / "gated.py").write_text(example + GATED.format(gate=str(gate)))
    doc.update(objective="gated.py:train", budget={"evaluations": EVALS}, output="runs/asha",
               workers={"n": 2, "launcher": "local", "heartbeat_period": 1, "heartbeat_expire": 30},
               redis={"url": f"redis://127.0.0.1:{config.port}/0", "password_file": str(password_file)})
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with open(tmp_path / "sweep.err", "w") as err:
        proc = subprocess.Popen(sweep_cmd("sweep.yaml"), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    out = tmp_path / "runs" / "asha"

    def network_id() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended early: {(tmp_path / 'sweep.err').read_text()}")
        try:
            nets = json.loads((out / "state.json").read_text()).get("networks") or []
        except (OSError, ValueError):
            return None
        return nets[-1]["id"] if nets else None

    def resume() -> pd.DataFrame:
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(120) == 0, (tmp_path / "sweep.err").read_text()
        return pd.read_csv(out / "results.csv")

    try:
        nid = wait_until(network_id, 60, what="the sweep's network in state.json")
        net = Network.open(nid, config)
        wait_until(lambda: net.worker_counts().get("running", 0) == 2, 60, what="the sweep's 2 workers")
        os.kill(proc.pid, signal.SIGSTOP)  # the manager only: its workers go on and stop at the budget
        gate.touch()
        wait_until(lambda: net.n_finished_tasks == EVALS and net.worker_counts().get("running", 0) == 0, 120,
                   what=f"{EVALS} evaluations finished in Redis")
        yield request.param, nid, resume
    finally:
        _stop_group(proc)


def test_asha_sweep_curves_over_fidelity_and_best_so_far(paused_asha_sweep, start_dashboard, browser):  # noqa: F811
    strategy, nid, resume = paused_asha_sweep
    d = start_dashboard("--network", nid)
    fid = get_json(d.base + f"/api/{nid}/fidelity")
    best = get_json(d.base + f"/api/{nid}/best")

    page = new_page(browser, [])
    page.goto(d.base + f"/?network={nid}")
    page.wait_for_function(f"document.getElementById('count-finished').textContent === '{EVALS}'")
    page.wait_for_selector("#fidelity-panel:not([hidden]) svg g.curve")
    page.wait_for_selector("#best-chart canvas")
    page.wait_for_function("document.getElementById('best-summary').textContent.startsWith('best loss')")
    n_curves = page.locator("#fidelity-chart g.curve").count()
    legend = {int(s.get_attribute("data-rung")): (int(s.get_attribute("data-configs")), int(s.get_attribute("data-reached")))
              for s in page.locator("#fidelity-legend span.rung-count").all()}
    summary = page.text_content("#best-summary") or ""
    assert not page.errors  # type: ignore[attr-defined]
    if strategy == "asha":
        shot(page, "fidelity")

    df = resume()  # the manager goes on and writes the results of the same evaluations
    assert len(df) == EVALS and (df["state"] == "finished").all()
    configs = df.groupby("config")["rung"].max()
    per_rung = df.groupby("rung")["config"].nunique().to_dict()
    reached = configs.value_counts().to_dict()

    # the endpoint: one curve per configuration, its points the configuration's results, the counts per rung
    assert fid["fidelity"] is True and fid["metric"] == "loss" and fid["hyperband"] is (strategy == "hyperband")
    assert fid["n_configs"] == len(configs) and fid["n_evaluations"] == EVALS
    assert {r["rung"]: r["configs"] for r in fid["rungs"]} == per_rung
    assert {r["rung"]: r["reached"] for r in fid["rungs"] if r["reached"]} == reached
    assert {r["rung"]: r["fidelity"] for r in fid["rungs"]} == df.groupby("rung")["fidelity"].first().to_dict()
    for c in fid["curves"]:
        rows = df[df["config"] == c["config"]].sort_values("fidelity")
        assert c["rung"] == configs[c["config"]]
        if strategy == "hyperband":
            assert c["bracket"] == rows["bracket"].iloc[0]
        assert [p[0] for p in c["points"]] == rows["fidelity"].tolist()
        assert [p[1] for p in c["points"]] == pytest.approx(rows["loss"].tolist())
    assert max(configs) > 0, "no configuration was promoted: the sweep is too small to show curves"

    # the page: one curve per configuration, the legend's per-rung counts those of results.csv
    assert n_curves == len(configs)
    assert {r: v[0] for r, v in legend.items()} == per_rung
    assert {r: v[1] for r, v in legend.items() if v[1]} == reached

    # best so far: the sweep's metric (nested under "outputs"), its final best the best loss in results.csv
    assert best["column"] == "loss" and best["source"] == "sweep" and best["direction"] == "minimize"
    assert best["n_points"] == EVALS and best["best"][-1] == pytest.approx(df["loss"].min())
    assert best["best_row"]["config"] == df.loc[df["loss"].idxmin(), "config"]
    m = re.match(r"best loss = (\S+) \(minimize, sweep\)", summary)
    assert m and math.isclose(float(m.group(1)), df["loss"].min(), rel_tol=1e-4), summary


def test_other_networks_have_no_fidelity_panel(config, start_dashboard, browser):  # noqa: F811
    """A network whose tasks carry no fidelity: the endpoint says so and the panel stays hidden; a plain network's
    best-so-far line is as before."""
    r = rushhpc.Rush("nofid-" + uuid.uuid4().hex[:8], config=config)
    try:
        r.push_finished_tasks([{"x": i} for i in range(4)], [{"y": float(3 - i) ** 2} for i in range(4)])
        d = start_dashboard("--network", r.network_id)
        assert get_json(d.base + f"/api/{r.network_id}/fidelity") == {"network": r.network_id, "fidelity": False}
        best = get_json(d.base + f"/api/{r.network_id}/best")
        assert best["column"] == "y" and best["best"] == [9.0, 4.0, 1.0, 0.0]
        page = new_page(browser, [])
        page.goto(d.base + f"/?network={r.network_id}")
        page.wait_for_function("document.getElementById('count-finished').textContent === '4'")
        page.wait_for_selector("#best-chart canvas")
        page.wait_for_function("document.getElementById('best-summary').textContent.startsWith('best y = 0')")
        assert page.locator("#fidelity-panel").is_hidden()
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        r.reset()
        r.close()


def test_several_metrics_leave_best_so_far_to_the_pareto_panel(two_metric_sweep, start_dashboard, browser):  # noqa: F811
    rush, outs = two_metric_sweep
    d = start_dashboard("--network", rush.network_id)
    best = get_json(d.base + f"/api/{rush.network_id}/best")
    assert best["metrics"] == ["f1", "f2"] and best["column"] is None and best["x"] == []
    assert {"f1", "f2", "mem"} <= set(best["columns"])  # one of them can still be chosen
    chosen = get_json(d.base + f"/api/{rush.network_id}/best?column=f1")
    assert chosen["column"] == "f1" and chosen["best"][-1] == pytest.approx(min(o["f1"] for o in outs))
    page = new_page(browser, [])
    page.goto(d.base + f"/?network={rush.network_id}")
    page.wait_for_selector("#pareto-panel:not([hidden]) svg circle.front")
    page.wait_for_selector("#best-chart p.several-metrics")
    assert "see the Pareto front panel" in page.text_content("#best-chart")
    assert page.locator("#fidelity-panel").is_hidden()
    assert not page.errors  # type: ignore[attr-defined]
