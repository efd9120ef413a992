"""Notebook features (`rushhpc.manager.display`): the manager's text and HTML summary, progress bars, and the
example notebook (executed with nbclient in a fresh kernel: local workers, embedded Redis, and `rushhpc.sweep`)."""

from __future__ import annotations

import json
import re

import nbformat
import psutil
import pytest
import redis
from nbclient import NotebookClient
from support import EXAMPLES, free_port, wait_until

from rushhpc import Network, queue_loop
from rushhpc.core.records import SweepInfo
from rushhpc.manager import display
from rushhpc.manager.display import manager_html, manager_repr, progress, summary


def finish(worker, n: int, ys) -> None:
    for y in ys[:n]:
        task = worker.pop_task(timeout=1)
        worker.finish_tasks([task["key"]], [{"y": y}])


# ---------------------------------------------------------------------- summary


def test_summary_of_an_empty_network(rush, config):
    text = manager_repr(rush)
    assert text.splitlines()[0] == f"<Rush network {rush.network_id!r}, Redis {config.address}/0 (password set)>"
    assert "workers  none" in text and "tasks    none" in text and "best" not in text
    assert config.password not in text and config.password not in manager_html(rush)


def test_counts_by_state(rush, worker):
    rush.push_tasks([{"x": i} for i in range(5)])
    finish(worker, 2, [1.0, 2.0])
    task = worker.pop_task(timeout=1)
    worker.fail_tasks([task["key"]], ["boom"])
    worker.pop_task(timeout=1)  # one running
    s = summary(rush)
    assert s["tasks"] == {"queued": 1, "running": 1, "finished": 2, "failed": 1}
    assert s["workers"]["running"] == 1 and s["best"] is None
    text = manager_repr(rush)
    assert "tasks    1 queued, 1 running, 2 finished, 1 failed" in text
    assert "workers  1 running" in text
    page = manager_html(rush)
    assert "2 finished" in page and "1 failed" in page and 'class="rushhpc-manager"' in page
    assert re.search(r'title="finished: 2" style="width:40\.000%', page)  # the stacked bar


def test_best_of_a_sweep(rush):
    rush.push_finished_tasks([{"x": 1.0, "label": "<b>one</b>"}, {"x": 2.0, "label": "two"}, {"x": 3.0, "label": "3"}],
                             [{"y": 0.5}, {"y": -1.25}, {"y": 4.0}])
    assert summary(rush)["best"] is None  # not a sweep's network: no best
    # a sweep's network: what `rushhpc sweep` records (Network.set_sweep_info) names the metric and direction.
    # The summary used to read fields of the meta hash that nothing writes, so a sweep never showed its best.
    rush.set_sweep_info(SweepInfo("branin", "random", "y", "minimize"))
    best = summary(rush)["best"]
    assert best["value"] == -1.25 and best["params"] == {"x": 2.0, "label": "two"} and best["direction"] == "minimize"
    assert "best     y = -1.25 (x=2, label=two)" in manager_repr(rush)
    assert summary(rush, direction="maximize")["best"]["value"] == 4.0
    # explicit arguments make any network a sweep, and override what the sweep recorded
    assert summary(rush, metric="y", direction="maximize")["best"]["value"] == 4.0
    page = manager_html(rush, metric="x", direction="minimize")
    assert "x = 1" in page and "&lt;b&gt;one&lt;/b&gt;" in page and "<b>one</b>" not in page  # escaped
    assert "no column 'z'" in manager_repr(rush, metric="z")


def test_best_of_a_maximizing_sweep(rush):
    rush.push_finished_tasks([{"x": 1.0}, {"x": 2.0}], [{"acc": 0.75}, {"acc": 0.5}])
    rush.set_sweep_info(SweepInfo("s", "tpe", "acc", "maximize", evaluations=2))
    best = summary(rush)["best"]
    assert (best["metric"], best["value"], best["direction"], best["params"]) == ("acc", 0.75, "maximize", {"x": 1.0})


def test_best_skipped_before_any_result(rush):
    rush.push_tasks([{"x": 1}])
    assert "best     y: no finished task yet" in manager_repr(rush, metric="y")


def test_unreachable_redis_is_shown_not_raised(rush):
    live = rush.connector
    rush.connector = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        text = manager_repr(rush)
        page = manager_html(rush)
    finally:
        rush.connector = live  # the fixture resets the network through it
    assert "Redis cannot be read: ConnectionError" in text
    assert "Redis cannot be read" in page


def test_a_network_view_has_a_summary_too(rush, config):
    view = Network.open(rush.network_id, config)
    assert manager_repr(view).startswith(f"<Network network {rush.network_id!r}")


# ---------------------------------------------------------------------- progress


def test_progress_is_off_when_not_interactive(monkeypatch):
    monkeypatch.delenv("RUSHHPC_PROGRESS", raising=False)
    assert not display.interactive()  # pytest captures stderr: not a terminal
    assert not display.in_jupyter()
    with progress(10, "tasks") as bar:
        assert not bar.enabled
        bar.set(5)


def test_progress_bar(monkeypatch, capsys):
    monkeypatch.setenv("RUSHHPC_PROGRESS", "1")
    assert display.interactive()
    with progress(4, "tasks") as bar:
        assert bar.enabled
        for done in (1, 3, 4):
            bar.set(done)
        bar.set(5, total=6)
    err = capsys.readouterr().err
    assert "tasks" in err and "5/6" in err
    with progress(0, "tasks") as bar:  # nothing to wait for: no bar
        assert not bar.enabled
    monkeypatch.setenv("RUSHHPC_PROGRESS", "0")
    with progress(3, "tasks", enabled=None) as bar:
        assert not bar.enabled
    with progress(3, "tasks", enabled=True) as bar:  # forced
        assert bar.enabled


# issue 20 defect 7: inside no_progress_bars (a sweep's run) no bar is drawn, even forced; it nests
def test_no_progress_bars_suppresses_every_bar(monkeypatch, capsys):
    monkeypatch.setenv("RUSHHPC_PROGRESS", "1")
    with display.no_progress_bars():
        with display.no_progress_bars():
            with progress(3, "workers", enabled=True) as bar:
                assert not bar.enabled
                bar.set(3)
        with progress(3, "workers") as bar:
            assert not bar.enabled
    assert "workers" not in capsys.readouterr().err
    with progress(3, "workers") as bar:  # after the block: bars again
        assert bar.enabled


def test_progress_closes_on_error(monkeypatch):
    monkeypatch.setenv("RUSHHPC_PROGRESS", "1")
    with pytest.raises(KeyError):
        with progress(3, "tasks") as bar:
            raise KeyError("x")
    assert bar.bar.disable or bar.bar.n == 0  # closed: tqdm marks a closed bar disabled


# ---------------------------------------------------------------------- the hooks in rush.py


def test_rush_repr_and_html(rush):
    rush.push_tasks([{"x": 1}])
    assert repr(rush) == manager_repr(rush) and "1 queued" in repr(rush)
    assert rush._repr_html_() == manager_html(rush)


def test_waits_show_progress(rush, worker, monkeypatch, capsys):
    monkeypatch.setenv("RUSHHPC_PROGRESS", "1")
    keys = rush.push_tasks([{"x": i} for i in range(3)])
    finish(worker, 3, [1.0, 2.0, 3.0])
    rush.wait_for_tasks(keys)
    assert "3/3" in capsys.readouterr().err
    rush.wait_for_tasks(keys, progress=False)
    assert capsys.readouterr().err == ""
    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs)
    rush.wait_for_workers(worker_ids=ids)
    assert "workers" in (err := capsys.readouterr().err) and "1/1" in err


# ---------------------------------------------------------------------- the example notebook


def test_example_notebook_is_stored_without_outputs():
    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_example_notebook_runs(tmp_path):
    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "200 evaluations, best y =" in text
    best = float(re.search(r"best y = ([0-9.]+)", text).group(1))
    assert 0.397 < best < 5
    # rushhpc.sweep from the notebook: the same sweep as the command line, its results table
    assert re.search(r"32 sweep evaluations, completed, best y = [0-9.]+", text), text
    assert (tmp_path / "runs" / "notebook-sweep" / "results.csv").exists()
    rich = [o for o in outputs if o.output_type in ("execute_result", "display_data")]
    shown = json.dumps([o.data for o in rich])
    assert "best" in shown  # the HTML summary with the best y
    assert shown.count("rushhpc-manager") >= 3  # and displaying the manager shows its summary
    # the kernel has ended: its workers are gone with it
    pids = json.loads(text.strip().splitlines()[-1])
    assert len(pids) == 2
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), timeout=30, what="the notebook's workers to end")
