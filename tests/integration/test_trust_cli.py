"""Issue 20, the command line's part: errors in the CLI's words (5f), the rough edges of the
commands (6) and the plots (8). Every test runs the real CLI (or the real code) against a real Redis."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from support import wait_until

from rushhpc import RushWorker, redis_config
from rushhpc.errors import RushConfigError
from rushhpc.store.diagnostics import RedisUnusableError, in_words_of


def cli(*args, config=None, cwd=None, env_extra=None, timeout=60):
    env = dict(os.environ)
    env.pop("RUSHHPC_REDIS_URL", None)
    if config is not None:
        env["RUSHHPC_REDIS_URL"] = config.url()
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A real TCP server that accepts connections and never answers a byte (a wrong port, a stuck server)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never read from nor written to

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


# --------------------------------------------------------------------------------------------------
# 5f: connection and password errors in the words of the interface the user came through
# --------------------------------------------------------------------------------------------------

# issue 20 defect 5f: on the CLI a missing password names --password-file, not redis_config(...)
def test_cli_missing_password_names_the_flag(redis_server):
    out = cli("networks", "--redis", f"redis://127.0.0.1:{redis_server.port}/0")
    assert out.returncode == 2, out.stderr
    assert "requires a password" in out.stderr and "--password-file FILE" in out.stderr
    assert "redis_config(" not in out.stderr and "Traceback" not in out.stderr


# issue 20 defect 5f: a wrong password on the CLI names --password-file, and never the password
def test_cli_wrong_password_names_the_flag(redis_server, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("not-the-password\n")
    pw.chmod(0o600)
    out = cli("workers", "-n", "x", "--redis", f"redis://127.0.0.1:{redis_server.port}/0", "--password-file", str(pw))
    assert out.returncode == 2
    assert "refused the credentials" in out.stderr and "--password-file" in out.stderr
    assert "redis_config(" not in out.stderr and "not-the-password" not in out.stderr


# issue 20 defect 5f: an unreachable Redis on the CLI: no "embedded Redis" (the CLI never starts one);
# --redis / RUSHHPC_REDIS_URL and `rushhpc redis start` instead
def test_cli_unreachable_redis_says_how_to_name_or_start_one():
    port = closed_port()
    out = cli("networks", "--redis", f"redis://127.0.0.1:{port}/0")
    assert out.returncode == 2
    err = out.stderr
    assert f"cannot reach Redis at 127.0.0.1:{port}" in err and "embedded" not in err
    assert "--redis" in err and "RUSHHPC_REDIS_URL" in err and "rushhpc redis start" in err
    assert ".." not in err  # redis-py's "Connection refused." is not followed by a second period


# issue 20 defect 5f: the Python API keeps its wording; every wording rides on the error
def test_python_wording_stays_and_every_interface_has_its_own(redis_server):
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=redis_server.port).connect()
    assert isinstance(e.value, RushConfigError)
    assert "redis_config(password_file=...)" in str(e.value)
    assert "--password-file FILE" in e.value.for_interface("cli")
    assert "redis.password_file" in e.value.for_interface("sweep")
    assert in_words_of(e.value, "cli") == e.value.for_interface("cli")
    port = closed_port()
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=port).connect()
    assert "Leave the config unset to use a private embedded Redis" in str(e.value)
    assert "redis: embedded" in e.value.for_interface("sweep") and "embedded" not in e.value.for_interface("cli")
    # an error raised for an interface keeps its words when someone else translates it
    with pytest.raises(RedisUnusableError) as e:
        redis_config(host="127.0.0.1", port=port).connect(interface="sweep")
    assert "redis: embedded" in str(e.value) and in_words_of(e.value, "cli") == str(e.value)
    import pickle

    back = pickle.loads(pickle.dumps(e.value))
    assert str(back) == str(e.value) and back.for_interface("cli") == e.value.for_interface("cli")


# issue 20 defect 5f: a sweep's unreachable `redis:` names `redis: embedded`, not "leave the config unset"
def test_sweep_unreachable_redis_names_the_yaml_key(tmp_path):
    port = closed_port()
    (tmp_path / "f.py").write_text("def f(x):\n    return {'y': x}\n")
    (tmp_path / "s.yaml").write_text(
        "objective: f.py:f\nspace:\n  x: {type: float, low: 0, high: 1}\nstrategy: random\n"
        f"budget: {{evaluations: 2}}\nworkers: {{n: 1}}\nredis: {{url: 'redis://127.0.0.1:{port}/0'}}\noutput: out\n")
    out = cli("sweep", "s.yaml", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"cannot reach Redis at 127.0.0.1:{port}" in out.stderr and "redis: embedded" in out.stderr
    assert "Leave the config unset" not in out.stderr and "--redis" not in out.stderr


# issue 20 defect 5f: a port that accepts and never answers is named as such, not "is redis-server running"
def test_a_silent_listener_is_not_called_unreachable(silent_port):
    cfg = redis_config(host="127.0.0.1", port=silent_port)
    with pytest.raises(RedisUnusableError) as e:
        cfg.connect()
    msg = str(e.value)
    assert f"something listens on 127.0.0.1:{silent_port} but does not answer as Redis" in msg
    assert "is redis-server running" not in msg.lower() and "wrong port" in msg and "TLS" in msg
    assert "stuck" in msg
    t = time.monotonic()
    out = cli("networks", "--redis", f"redis://127.0.0.1:{silent_port}/0")
    assert out.returncode == 2 and time.monotonic() - t < 30
    assert "does not answer as Redis" in out.stderr and "--redis URL" in out.stderr
    assert "redis_config(" not in out.stderr and "is redis-server running" not in out.stderr.lower()


# --------------------------------------------------------------------------------------------------
# 6: the command line's rough edges
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def failing(rush, config):
    """A network with a registered worker, one finished task and one failed with a multi-line traceback."""
    w = RushWorker(rush.network_id, config=config, heartbeat_period=0.5, heartbeat_expire=5)
    rush.push_tasks([{"x": 1}, {"x": 2}])
    a, b = w.pop_task(timeout=0), w.pop_task(timeout=0)
    w.finish_tasks([a["key"]], [{"y": 1.5}])
    tb = ('Traceback (most recent call last):\n  File "loop.py", line 3, in f\n    raise ValueError("bad value")\n'
          "ValueError: bad value")
    w.fail_tasks([b["key"]], [tb])
    yield rush, w, tb
    w.close()


# issue 20 defect 6: the networks header says which RUNNING counts workers and which tasks
def test_networks_header_labels_workers_and_tasks(failing, config):
    lines = cli("networks", config=config).stdout.splitlines()
    group, header = lines[0], lines[1]
    assert header.split()[:7] == ["NETWORK", "RUNNING", "PENDING", "QUEUED", "RUNNING", "FINISHED", "FAILED"]
    assert group.split() == ["WORKERS", "TASKS"]
    assert group.index("WORKERS") == header.index("RUNNING")  # over the workers' RUNNING and PENDING
    assert group.index("TASKS") == header.index("QUEUED")  # over the tasks' QUEUED ... FAILED


# issue 20 defect 6: one row per task in the table, a traceback's condition folded (its exception shown);
# --json keeps the whole text
def test_failed_task_rows_stay_on_one_line(failing, config):
    rush, w, tb = failing
    out = cli("tasks", rush.network_id, "--state", "failed", "--state", "finished", config=config)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rows = [line for line in lines[1:] if not line.startswith("(")]
    assert len(rows) == 2, out.stdout  # a header and one line per task
    failed = next(line for line in rows if " failed " in line)
    assert "ValueError: bad value" in failed and rush.network_id not in failed
    assert "--json" in lines[-1]  # says where the whole text is
    doc = json.loads(cli("tasks", rush.network_id, "--state", "failed", "--json", config=config).stdout)
    assert doc[0]["condition"] == tb


# issue 20 defect 6: a sweep's parameters and outputs have columns of their own (docs/cli.md), not one JSON PARAMS
def test_sweep_tasks_show_parameters_as_columns(rush, config):
    from rushhpc.core.records import SweepInfo

    rush.set_sweep_info(SweepInfo("s", "random", "y", "minimize", evaluations=2))
    w = RushWorker(rush.network_id, config=config)
    rush.push_tasks([{"params": {"lr": 0.5, "opt": "adam"}}, {"params": {"lr": 0.25, "opt": "sgd"}}],
                    xss_extra=[{"eval": 0}, {"eval": 1}])
    a, b = w.pop_task(timeout=0), w.pop_task(timeout=0)
    w.fail_tasks([b["key"]], ["ValueError: nan"])
    w.finish_tasks([a["key"]], [{"outputs": {"y": 0.125, "acc": 0.9}, "value": 0.125}])
    out = cli("tasks", rush.network_id, "--state", "failed", "--state", "finished", config=config)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert "PARAMS" not in header and "OUTPUTS" not in header
    assert header[:4] == ["LR", "OPT", "Y", "ACC"], header
    assert any(line.split()[:4] == ["0.5", "adam", "0.125", "0.9"] for line in out.stdout.splitlines())
    rows = json.loads(cli("tasks", rush.network_id, "--state", "finished", "--json", config=config).stdout)
    assert rows[0]["lr"] == 0.5 and rows[0]["opt"] == "adam" and rows[0]["y"] == 0.125 and "params" not in rows[0]
    w.close()


# issue 20 defect 6: `logs` with nothing to show says so and how to see more (it printed nothing at all)
def test_logs_without_records_says_so(failing, config):
    rush, w, _ = failing
    out = cli("logs", rush.network_id, config=config)
    assert out.returncode == 0
    assert f"network {rush.network_id} has no log records" in out.stdout and "log_thresholds" in out.stdout
    out = cli("logs", rush.network_id, "--json", config=config)
    assert out.stdout == "" and "has no log records" in out.stderr  # stdout stays JSON lines
    rush.connector.xadd(rush.keys.log, {"worker_id": w.worker_id, "level": "INFO", "logger": "rushhpc.t",
                                        "msg": "hello", "timestamp": str(time.time())})
    out = cli("logs", rush.network_id, "--level", "ERROR", config=config)
    assert "none of the 1 log record(s)" in out.stdout and "--level" in out.stdout


# issue 20 defect 6: `top` quits on q, typed in a real terminal (tmux)
def test_top_quits_on_q(failing, config, tmp_path):
    rush, _, _ = failing
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide the test
            pytest.fail("tmux is not installed, but CI must run this test (.ci/run installs tmux)")
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    sock = f"rushhpc-top-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit"
    env = f"RUSHHPC_REDIS_URL={config.url()}"
    cmd = f"env {env} {sys.executable} -m rushhpc top {rush.network_id} --interval 30; echo $? > {done}; sleep 60"
    tmux = ["tmux", "-L", sock]
    subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "160", "-y", "30", cmd], check=True, timeout=30)
    try:
        def screen():
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True,
                                  timeout=30).stdout
        wait_until(lambda: f"network {rush.network_id}" in screen(), 30, 0.2, "top's first screen")
        t = time.monotonic()
        subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True, timeout=30)
        wait_until(done.exists, 20, 0.1, "top to end after q")
        assert time.monotonic() - t < 20  # not the 30 s interval: the key ended it
        wait_until(lambda: done.read_text().strip() != "", 5, 0.05, "the exit status")
        assert done.read_text().strip() == "0" and "q quits" in screen()
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=30)


def _console_script() -> str:
    """The installed `rushhpc` console script (unlike `python -m`, it starts without the current folder on sys.path)."""
    path = Path(sys.executable).with_name("rushhpc")
    if not path.exists():
        pytest.skip("no rushhpc console script beside this python")
    return str(path)


LOOP = """
def myloop(rush, scale=1):
    while not rush.terminated:
        task = rush.pop_task(timeout=0.2)
        if task is not None:
            rush.finish_tasks([task["key"]], [{"y": task["xs"]["x"] * scale}])
"""


# issue 20 defect 6: `rushhpc script mod:fn` finds ./mod.py (as a sweep does), and the printed command
# carries the folder on PYTHONPATH (not a secret), so a worker started elsewhere finds it too
def test_script_finds_a_module_in_the_current_folder(rush, config, tmp_path):
    here = tmp_path / "proj"
    here.mkdir()
    (here / "myloops.py").write_text(LOOP)
    base = dict(os.environ, RUSHHPC_REDIS_URL=config.url())
    run = subprocess.run([_console_script(), "script", "myloops:myloop", "-n", rush.network_id, "--worker-type", "slurm",
                          "--n-workers", "2"], cwd=here, capture_output=True, text=True, timeout=60, env=base)
    assert run.returncode == 0, run.stderr
    assert f"export PYTHONPATH={here}" in run.stdout and config.password not in run.stdout
    run = subprocess.run([_console_script(), "script", "myloops:myloop", "-n", rush.network_id, "--worker-type", "script",
                          "--set", "scale=10"], cwd=here, capture_output=True, text=True, timeout=60, env=base)
    assert run.returncode == 0, run.stderr
    command = run.stdout.strip()
    assert command.startswith(f"PYTHONPATH={here}") and config.password not in command
    elsewhere = tmp_path / "elsewhere"  # another folder, as on another node: only the command's PYTHONPATH helps
    elsewhere.mkdir()
    no_url = {k: v for k, v in base.items() if k != "RUSHHPC_REDIS_URL"}
    proc = subprocess.Popen(["bash", "-c", command], cwd=elsewhere, env=no_url, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        keys = rush.push_tasks([{"x": 3}])
        rush.wait_for_tasks(keys, timeout=60)
        assert rush.fetch_finished_tasks()["y"].tolist() == [30]
        # `rushhpc worker` itself (the console script, no PYTHONPATH) finds ./myloops.py in its folder
        argv = command.split(" ", 1)[1].split()
        argv = [_console_script(), *argv[argv.index("worker"):]]
        w2 = subprocess.Popen(argv, cwd=here, env=no_url, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(rush.running_worker_ids) == 2 or w2.poll() is not None, 60, 0.1,
                       "the second worker to register")
            assert w2.poll() is None, w2.stderr.read() if w2.stderr else ""
            keys = rush.push_tasks([{"x": 5}, {"x": 6}])
            rush.wait_for_tasks(keys, timeout=60)
            rush.stop_workers(type="terminate")
            assert w2.wait(30) == 0
        finally:
            if w2.poll() is None:
                os.killpg(w2.pid, 9)
                w2.wait(10)
    finally:
        rush.stop_workers(type="terminate")
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


# --------------------------------------------------------------------------------------------------
# 8: plots
# --------------------------------------------------------------------------------------------------

def _records(values, t0=1000.0, dt=0.5, runtime=0.0002, workers=("w-a", "w-b", "w-c")):
    """Plot records: evaluation i finishes at t0 + i * dt after ``runtime`` seconds; None = failed."""
    out = []
    for i, v in enumerate(values):
        start = t0 + i * dt
        out.append({"state": "failed" if v is None else "finished", "value": v, "worker_id": workers[i % len(workers)],
                    "started_at": start, "finished_at": start + runtime})
    return out


# issue 20 defect 8: values spanning decades get a log axis (an early 136 no longer flattens the rest),
# every evaluation is a point, a flag forces the scale
def test_best_so_far_axis_and_points():
    from rushhpc.ui.plot import FIGURES, figures

    values = [136.0, 80.0, None, 17.0, 40.0, 2.5, 9.0, 1.2, 0.5, 0.4]
    figs = dict(figures(_records(values), "y", "minimize"))
    for name in FIGURES[:2]:
        ax = figs[name].axes[0]
        assert ax.get_yscale() == "log", name
        points = [c for c in ax.collections if c.get_label() == "y of each evaluation"]
        assert len(points) == 1 and len(points[0].get_offsets()) == 9  # every finished evaluation
        assert [c for c in ax.collections if c.get_label() == "failed"][0].get_offsets().shape[0] == 1
    lin = dict(figures(_records(values), "y", "minimize", yscale="linear"))
    assert lin[FIGURES[1]].axes[0].get_yscale() == "linear"
    near = dict(figures(_records([3.0, 2.0, 2.5, 1.5]), "y", "minimize"))
    assert near[FIGURES[1]].axes[0].get_yscale() == "linear"  # one decade or less: linear
    signed = dict(figures(_records([500.0, 20.0, -0.5, -0.2, 0.1]), "y", "maximize"))
    assert signed[FIGURES[1]].axes[0].get_yscale() == "symlog"
    import matplotlib.pyplot as plt

    plt.close("all")


# issue 20 defect 8: sub-millisecond tasks are visible bars in the worker timeline (a worker with 17 of
# 60 evaluations looked idle)
def test_timeline_bars_have_a_visible_width():
    from rushhpc.ui.plot import FIGURES, figures

    recs = _records([1.0] * 60, dt=0.2, runtime=0.0002, workers=("w-a", "w-b", "w-c", "w-d"))
    fig = dict(figures(recs, "y", "minimize"))[FIGURES[2]]
    ax = fig.axes[0]
    fig.canvas.draw()
    widths = []
    for coll in ax.collections:
        for path in coll.get_paths():
            box = path.get_extents(ax.transData)  # the bar in pixels
            widths.append(box.width)
    assert len(widths) == 60
    assert min(widths) >= 2.0, min(widths)  # at 100 dpi, 0.2 ms of a 12 s run would be 0.01 pixel
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["w-a (15)", "w-b (15)", "w-c (15)", "w-d (15)"]
    import matplotlib.pyplot as plt

    plt.close("all")


# issue 20 defect 8: the CLI's --yscale flag, and the PNG files from a sweep folder
def test_plot_cli_yscale(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    with (folder / "journal.jsonl").open("w") as f:
        for r in _records([136.0, 17.0, 2.5, 0.4, 0.9]):
            f.write(json.dumps(r) + "\n")
    (folder / "config.yaml").write_text("metric: y\ndirection: minimize\n")
    for scale in ("log", "linear", "symlog", "auto"):
        out = cli("plot", str(folder), "--yscale", scale, "--out", str(tmp_path / scale), "--json")
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)["files"]) == 3
    bad = cli("plot", str(folder), "--yscale", "sideways")
    assert bad.returncode == 2 and "--yscale" in bad.stderr
