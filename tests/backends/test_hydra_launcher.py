"""The Hydra launcher plugin (``hydra/launcher=rushhpc``, hydra_plugins/rushhpc_launcher).

The small app in tests/hydra_app runs as a user runs it (``python app.py -m ...``, a
subprocess) and through tests/hydra_app/launch.py, which calls the launcher the way Hydra's
sweeper does and prints every JobReturn, failed ones included. Hydra's own launcher test
suites run at the end: `LauncherTestSuite` in this process, `IntegrationTestSuite` through
subprocesses.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite
from support import REPO, wait_until
from support.batch_backends import REPO, SlurmBackend, require

# setuptools' default editable install serves packages through an import hook that Hydra's
# plugin scan (pkgutil.walk_packages over the hydra_plugins namespace) cannot list. A wheel
# install puts hydra_plugins/ in site-packages; here the checkout plays that part, for this
# process and (PYTHONPATH, below) for the apps the tests start. test_wheel_ships_the_plugin
# checks the wheel.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hydra_plugins.rushhpc_launcher import _core  # noqa: E402
from hydra_plugins.rushhpc_launcher.rushhpc_launcher import RushhpcLauncher  # noqa: E402
from rushhpc.errors import RushConfigError  # noqa: E402

APP = REPO / "tests" / "hydra_app"


@pytest.fixture(autouse=True)
def _plugin_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    yield
    _core.shutdown_all()  # sessions run in this process (Hydra's LauncherTestSuite): stop their workers
    assert not _core._SESSIONS


def run_app(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(APP / "app.py"), "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def launch(overrides: list[str], batches: list[list[list[str]]], cwd: Path, timeout: float = 180) -> list[dict]:
    """Run batches through one launcher (tests/hydra_app/launch.py); each batch's seconds and returns."""
    spec = {"overrides": ["hydra/launcher=rushhpc", f"hydra.sweep.dir={cwd / 'sweep'}", *overrides],
            "batches": batches}
    out = subprocess.run([sys.executable, str(APP / "launch.py"), json.dumps(spec)], cwd=cwd, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(line[-1][len("RESULT "):])


def gone(pids) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


# ---------------------------------------------------------------------- plugin


def test_discovered_and_registered():
    assert "RushhpcLauncher" in [c.__name__ for c in Plugins.instance().discover(Launcher)]
    assert "rushhpc.yaml" in ConfigStore.instance().list("hydra/launcher")


def test_plugin_scan_imports_no_rushhpc():
    """Hydra imports every plugin module at start-up: ours must stay light."""
    code = ("import sys\nfrom hydra.core.plugins import Plugins\nfrom hydra.plugins.launcher import Launcher\n"
            "names = [c.__name__ for c in Plugins.instance().discover(Launcher)]\n"
            "print(names, sorted(m for m in ('rushhpc', 'redis', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "RushhpcLauncher" in out.stdout and out.stdout.strip().endswith("[]"), out.stdout


def test_config_defaults_are_rushhpcs():
    """The launcher config writes rushhpc's defaults out (the plugin scan must not import rushhpc): they agree."""
    from hydra_plugins.rushhpc_launcher.config import RushhpcLauncherConf
    from rushhpc import defaults

    assert RushhpcLauncherConf().restart_budget == defaults.RESTART_BUDGET


def test_wheel_ships_the_plugin(tmp_path):
    """The wheel carries hydra_plugins/rushhpc_launcher (and no hydra_plugins/__init__.py, which would
    hide every other plugin), and Hydra finds it in a plain install."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("rushhpc", "hydra_plugins"):  # the job templates are inside rushhpc/launchers/
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # without an isolated build environment when this one can build wheels (faster, no index needed)
    probe = "import setuptools, sys; v = tuple(map(int, setuptools.__version__.split('.')[:2]))\n" \
            "import importlib.util; sys.exit(0 if v >= (70, 1) or importlib.util.find_spec('wheel') else 1)"
    local = subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src),
                          *(["--no-build-isolation"] if local else [])], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("rushhpc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("__init__.py", "config.py", "rushhpc_launcher.py", "_core.py", "_worker.py", "py.typed"):
        assert f"hydra_plugins/rushhpc_launcher/{f}" in names
    assert "hydra_plugins/__init__.py" not in names
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    code = ("from hydra.core.plugins import Plugins\nfrom hydra.plugins.launcher import Launcher\n"
            "import hydra_plugins.rushhpc_launcher as m\n"
            "print(m.__file__, [c.__name__ for c in Plugins.instance().discover(Launcher)])")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout and "RushhpcLauncher" in out.stdout


def test_config_checks():
    with pytest.raises(RushConfigError, match="password_file"):
        _core.redis_of(_core.parse_params({"redis_url": "redis://:hunter2@login1:6379/0"}))
    with pytest.raises(RushConfigError, match="unknown field"):
        _core.parse_params({"n_worker": 2})
    with pytest.raises(RushConfigError, match="n_workers"):
        _core.parse_params({"n_workers": 0})
    with pytest.raises(RushConfigError, match="script"):
        _core.parse_params({"worker_type": "script"})
    assert _core.redis_of(_core.parse_params({})) is None
    assert _core.redis_of(_core.parse_params({"redis_url": "embedded"})) == "embedded"
    cfg = _core.redis_of(_core.parse_params({"redis_url": "redis://login1:6380/2"}))
    assert cfg is not None and (cfg.address, cfg.db) == ("login1:6380", 2)


# ---------------------------------------------------------------------- the app, as users run it


def test_multirun_from_the_command_line(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_app("lr=1e-4,1e-3", "batch_size=16,32", "hydra/launcher=rushhpc", "hydra.launcher.n_workers=2",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "started 2 local worker(s)" in out.stdout + out.stderr
    assert (sweep / "multirun.yaml").exists()
    expected = {0: 0.0016, 1: 0.0032, 2: 0.016, 3: 0.032}
    results = {}
    for num, score in expected.items():
        job = sweep / str(num)
        for f in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (job / ".hydra" / f).exists()
        assert (job / "app.log").exists()
        results[num] = r = json.loads((job / "result.json").read_text())
        assert r["score"] == pytest.approx(score) and r["job_num"] == num
    pids = {r["pid"] for r in results.values()}
    assert 1 <= len(pids) <= 2  # two workers ran the four jobs
    assert len({r["ppid"] for r in results.values()}) == 1  # local workers are children of the app
    assert len({r["job_id"] for r in results.values()}) == 4
    # the app has exited: its workers are gone with it
    wait_until(lambda: gone(pids), timeout=30, what="the workers to end with the app")


def test_failed_job_fails_the_multirun_with_its_reason(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_app("fail=false,true", "hydra/launcher=rushhpc", "hydra.launcher.n_workers=2", f"hydra.sweep.dir={sweep}",
                  cwd=tmp_path)
    assert out.returncode == 1
    assert "Error executing job with overrides: ['fail=True']" in out.stderr
    assert "ValueError: bad lr 0.1" in out.stderr
    # the worker's traceback names the application's file and line
    assert f'File "{APP / "app.py"}"' in out.stderr and 'raise ValueError(f"bad lr {cfg.lr}")' in out.stderr
    assert (sweep / "0" / "result.json").exists()  # the other job of the batch ran to its end


# ---------------------------------------------------------------------- the launcher, batch by batch


def test_results_in_order_as_they_arrive_and_workers_serve_every_batch(tmp_path):
    batches = [[["sleep=3"], ["lr=0.2"], ["lr=0.3"], ["lr=0.4"]], [["lr=0.5"], ["lr=0.6"]]]
    first, second = launch(["hydra.launcher.n_workers=2"], batches, tmp_path)
    rets = first["returns"]
    assert [r["status"] for r in rets] == ["COMPLETED"] * 4
    assert [r["overrides"] for r in rets] == batches[0]
    assert [r["value"]["score"] for r in rets] == pytest.approx([3.2, 6.4, 9.6, 12.8])
    assert [r["job_num"] for r in rets] == [0, 1, 2, 3]
    assert all(r["task_name"] == "app" and r["job_id"] == r["value"]["job_id"] for r in rets)
    # no barrier inside a batch: while one worker runs the slow job, the other runs the three quick ones
    slow, quick = rets[0]["value"]["pid"], {r["value"]["pid"] for r in rets[1:]}
    assert len(quick) == 1 and slow not in quick
    rets2 = second["returns"]
    assert [r["status"] for r in rets2] == ["COMPLETED"] * 2 and [r["job_num"] for r in rets2] == [4, 5]
    # started once: the second batch runs on the workers of the first
    assert {r["value"]["pid"] for r in rets2} <= {r["value"]["pid"] for r in rets}


def test_failed_and_lost_jobs_each_have_their_reason(tmp_path):
    batches = [[["fail=true"], ["crash=true"], ["lr=0.5"]], [["lr=0.7"], ["lr=0.8"]]]
    first, second = launch(["hydra.launcher.n_workers=2"], batches, tmp_path)
    failed, lost, ok = first["returns"]
    assert failed["status"] == "FAILED" and failed["error_type"] == "ValueError" and failed["error"] == "bad lr 0.1"
    assert failed["working_dir"] and failed["job_num"] == 0  # the JobReturn Hydra's run_job made on the worker
    assert "on rushhpc worker" in failed["cause"] and 'raise ValueError(f"bad lr {cfg.lr}")' in failed["cause"]
    assert lost["status"] == "FAILED" and lost["error_type"] == "RushhpcJobError"
    assert "job #1 (crash=true)" in lost["error"] and "was lost" in lost["error"] and "SIGKILL" in lost["error"]
    assert ok["status"] == "COMPLETED" and ok["value"]["score"] == pytest.approx(16.0)
    # the lost worker was replaced: the next batch runs
    assert [r["status"] for r in second["returns"]] == ["COMPLETED"] * 2


def test_lost_job_is_retried_with_max_retries(tmp_path):
    marker = tmp_path / "crashed-once"
    # the job SIGKILLs its worker the first time (and leaves a marker), then succeeds
    (first,) = launch(["hydra.launcher.n_workers=1", "hydra.launcher.max_retries=1"],
                      [[["lr=0.25", f"+crash_marker={marker}"]]], tmp_path)
    (ret,) = first["returns"]
    assert marker.exists()
    assert ret["status"] == "COMPLETED" and ret["value"]["score"] == pytest.approx(8.0)


def test_job_timeout_kills_and_replaces_the_worker(tmp_path):
    (first,) = launch(["hydra.launcher.n_workers=1", "hydra.launcher.job_timeout=2"],
                      [[["sleep=120"], ["lr=0.3"]]], tmp_path)
    slow, quick = first["returns"]
    assert slow["status"] == "FAILED" and "job_timeout=2 s" in slow["error"] and "was killed" in slow["error"]
    assert quick["status"] == "COMPLETED"
    assert first["seconds"] < 60


def test_no_worker_left_fails_the_rest_then_the_next_batch_starts_workers(tmp_path):
    batches = [[["crash=true"], ["lr=0.2"], ["lr=0.3"]], [["lr=0.4"]]]
    first, second = launch(["hydra.launcher.n_workers=1", "hydra.launcher.replace_lost_workers=false"], batches,
                           tmp_path)
    lost, *rest = first["returns"]
    assert lost["status"] == "FAILED" and "was lost" in lost["error"]
    for r in rest:
        assert r["status"] == "FAILED" and "no rushhpc worker is left to run it" in r["error"]
        assert "lost" in r["error"]  # the last worker's fate
    assert first["seconds"] < 60
    assert second["returns"][0]["status"] == "COMPLETED"


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_session_stops_its_workers_and_deletes_its_network(config, tmp_path):
    """In-process: the session of a multirun, its network on the test Redis, and its end."""
    try:
        _session_in_process(config, tmp_path)
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()  # what Hydra's own test runners do after a run


def _session_in_process(config, tmp_path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(config.password)
    pw.chmod(0o600)
    net = "hydra-t-" + secrets.token_hex(4)
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra.types import HydraContext, RunMode

    hydra_ = Hydra.create_main_hydra_file_or_module(calling_file=str(APP / "app.py"), calling_module=None,
                                                    config_path="conf", job_name="app")
    cfg = hydra_.compose_config("config", ["hydra/launcher=rushhpc", "hydra.launcher.n_workers=2",
                                           f"hydra.launcher.network={net}", f"hydra.launcher.password_file={pw}",
                                           f"hydra.launcher.redis_url=redis://127.0.0.1:{config.port}/0",
                                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                                run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=hydra_.config_loader, callbacks=Callbacks(cfg)),
        task_function=lambda c: c.lr * 2, config=cfg)
    # (Hydra's plugin scan executes the plugin's modules again: compare by name, not class identity)
    assert type(launcher).__name__ == RushhpcLauncher.__name__
    rets = launcher.launch([["lr=1"], ["lr=2"]], initial_job_idx=0)
    assert [r.return_value for r in rets] == [2, 4]
    session = launcher.session
    assert session is not None and session.rush.network_id == net
    rush = session.rush
    assert sorted(rush.fetch_finished_tasks()["return_value"]) == [2, 4]
    ids = rush.running_worker_ids
    assert len(ids) == 2
    pids = [int(p) for p in rush.worker_info["pid"]]
    session.shutdown()
    assert session.closed and not rush.connector.exists(rush.keys.meta)
    assert list(rush.connector.scan_iter(match=rush.keys.pattern)) == []
    wait_until(lambda: gone(pids), timeout=30, what="the workers to end")


@pytest.mark.slurm
def test_multirun_on_slurm(tmp_path):
    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")
    net = "hydra-slurm-" + secrets.token_hex(3)
    sweep = tmp_path / "sweep"
    t0 = time.monotonic()
    # the test cluster's nodes are this machine: the embedded Redis on 127.0.0.1 reaches them
    out = run_app("lr=1e-4,1e-3,1e-2", "hydra/launcher=rushhpc", "hydra.launcher.worker_type=slurm",
                  "hydra.launcher.n_workers=2", f"hydra.launcher.network={net}",
                  "++hydra.launcher.launcher_options={time: '00:10:00', poll_interval: 5}",
                  "hydra.launcher.heartbeat_period=5", "hydra.launcher.heartbeat_expire=30",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(3)]
    assert [r["score"] for r in results] == pytest.approx([0.0032, 0.032, 0.32])
    assert all(r["slurm_job"] for r in results), results  # each job ran inside a SLURM job of the array
    assert len({r["slurm_job"] for r in results}) <= 2
    # the app stopped its array when it ended
    wait_until(lambda: subprocess.run(["squeue", "-h", "--name", f"rushhpc-{net}"], capture_output=True,
                                      text=True).stdout.strip() == "", timeout=60, what="the worker jobs to end")
    assert time.monotonic() - t0 < 600


# ---------------------------------------------------------------------- Hydra's own launcher suites


@pytest.fixture
def launcher_name() -> str:
    return "rushhpc"


@pytest.fixture
def overrides(config, tmp_path) -> list[str]:
    """In this process: the session's workers use the test Redis (password from a 0600 file)."""
    pw = tmp_path / "redis.pw"
    pw.write_text(config.password)
    pw.chmod(0o600)
    return ["hydra.launcher.n_workers=2", f"hydra.launcher.redis_url=redis://127.0.0.1:{config.port}/0",
            f"hydra.launcher.password_file={pw}"]


class TestRushhpcLauncher(LauncherTestSuite):
    """Hydra's LauncherTestSuite, every test of it: sweeps of one and two jobs, config groups,
    overrides merged during the sweep, custom resolvers, errors, in this process."""


class TestRushhpcLauncherBatched(BatchedSweeperTestSuite):
    """Hydra's suite for sweepers that launch in batches, with the basic sweeper cut to batches of two:
    three launches of one launcher, on the same workers, six output directories."""

    @pytest.fixture
    def overrides(self, config, tmp_path) -> list[str]:
        pw = tmp_path / "redis.pw"
        pw.write_text(config.password)
        pw.chmod(0o600)
        return ["hydra.sweeper.max_batch_size=2", "hydra.launcher.n_workers=2",
                f"hydra.launcher.redis_url=redis://127.0.0.1:{config.port}/0", f"hydra.launcher.password_file={pw}"]


@pytest.fixture
def task_launcher_cfg() -> dict:
    return {}


@pytest.fixture
def extra_flags() -> list[str]:
    # each app is a new process with no Redis configured: the embedded one
    return ["-m", "hydra/launcher=rushhpc", "hydra.launcher.n_workers=1", "hydra.launcher.redis_url=embedded",
            "hydra/hydra_logging=disabled"]


class TestRushhpcLauncherIntegration(IntegrationTestSuite):
    """Hydra's IntegrationTestSuite: generated apps run as subprocesses (task names, sweep and
    working directories, original cwd, to_absolute_path), every test of it."""
