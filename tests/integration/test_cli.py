"""The command line: script, monitor, worker errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rushhpc import RushWorker


def cli(*args, env_url=None, **kw):
    env = dict(os.environ)
    if env_url:
        env["RUSHHPC_REDIS_URL"] = env_url
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=60, env=env, **kw)


def test_script_prints_the_slurm_script(config):
    out = cli("script", "rushhpc.worker.loops:queue_loop", "--network", "cli-net", "--n-workers", "5",
              "--set", "fun=null", "--option", "time=01:30:00", "--option", "partition=debug", env_url=config.url())
    assert out.returncode == 0, out.stderr
    s = out.stdout
    assert s.startswith("#!/bin/bash") and "#SBATCH --array=0-4" in s and "#SBATCH --time=01:30:00" in s
    assert "#SBATCH --partition=debug" in s and "#SBATCH --signal=B:USR2@" in s
    assert config.password not in s and "--credentials" in s


def test_script_pbs(config):
    out = cli("script", "rushhpc.worker.loops:queue_loop", "--network", "cli-net", "--worker-type", "pbs", "--n-workers", "3",
              "--set", "fun=null", "--option", "time=00:20:00", env_url=config.url())
    assert out.returncode == 0, out.stderr
    assert "#PBS -J 0-2" in out.stdout and "walltime=00:20:00" in out.stdout
    assert config.password not in out.stdout


def test_script_missing_loop_argument_names_set(config):
    out = cli("script", "rushhpc.worker.loops:queue_loop", "--network", "cli-net", env_url=config.url())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'fun'" in out.stderr and "--set KEY=VALUE" in out.stderr


def test_script_bad_loop(config):
    out = cli("script", "nosuchmodule:loop", env_url=config.url())
    assert out.returncode == 2 and "cannot import nosuchmodule:loop" in out.stderr


def test_monitor_once_json(rush, config):
    w = RushWorker(rush.network_id, config=config, heartbeat_period=0.5, heartbeat_expire=2)
    rush.push_tasks([{"x": 1}])
    out = cli("monitor", rush.network_id, "--once", "--json", env_url=config.url())
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["workers"][0]["worker_id"] == w.worker_id and doc["workers"][0]["state"] == "running"
    assert doc["tasks"]["queued"] == 1
    w.close()


def test_malformed_network_id_on_cli(config):
    out = cli("monitor", "bad id", "--once", env_url=config.url())
    assert out.returncode == 2 and "invalid network id" in out.stderr and "Traceback" not in out.stderr
