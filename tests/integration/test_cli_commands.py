"""Every inspection and control subcommand, through the real CLI in subprocesses, against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import wait_until

from rushhpc import RushWorker


def cli(*args, config=None, stdin=None):
    env = dict(os.environ)
    env.pop("RUSHHPC_REDIS_URL", None)
    if config is not None:
        env["RUSHHPC_REDIS_URL"] = config.url()
    return subprocess.run([sys.executable, "-m", "rushhpc", *args], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL if stdin is None else stdin)


def test_version_and_help():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("rushhpc ")
    for cmd in ("worker", "script", "networks", "workers", "tasks", "logs", "top", "monitor", "stop", "reset"):
        h = cli(cmd, "--help")
        assert h.returncode == 0 and "usage: rushhpc " + cmd in h.stdout, cmd


def test_networks_json(busy, config):
    rush, _ = busy
    out = cli("networks", "--json", config=config)
    assert out.returncode == 0, out.stderr
    docs = {d["network_id"]: d for d in json.loads(out.stdout)}
    d = docs[rush.network_id]
    assert d["tasks"] == {"queued": 2, "running": 1, "finished": 3, "failed": 1}
    assert d["workers"]["running"] == 1
    text = cli("networks", config=config)
    assert rush.network_id in text.stdout and "RUNNING" in text.stdout


def test_workers_json_and_table(busy, config):
    rush, w = busy
    out = cli("workers", "-n", rush.network_id, "--json", config=config)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert {"worker_id", "state", "hostname", "job_id", "reason", "heartbeat_age"} <= set(row)
    assert row["worker_id"] == w.worker_id and row["state"] == "running" and row["heartbeat_age"] < 5
    text = cli("workers", rush.network_id, config=config)
    assert w.worker_id in text.stdout and "HEARTBEAT" in text.stdout
    none = cli("workers", rush.network_id, "--state", "lost", "--json", config=config)
    assert json.loads(none.stdout) == []


def test_tasks_counts_and_rows(busy, config):
    rush, w = busy
    out = cli("tasks", "-n", rush.network_id, "--json", config=config)
    assert json.loads(out.stdout) == {"queued": 2, "running": 1, "finished": 3, "failed": 1}
    out = cli("tasks", "-n", rush.network_id, "--state", "finished", "--json", config=config)
    rows = json.loads(out.stdout)
    assert len(rows) == 3 and sorted(r["loss"] for r in rows) == [0.1, 0.5, 0.9]
    assert {r["worker_id"] for r in rows} == {w.worker_id} and sorted(r["y"] for r in rows) == [1.0, 2.0, 3.0]
    out = cli("tasks", "-n", rush.network_id, "--state", "failed", "--state", "queued", "--json", config=config)
    rows = json.loads(out.stdout)
    assert sorted(r["state"] for r in rows) == ["failed", "queued", "queued"]
    assert [r["condition"] for r in rows if r["state"] == "failed"] == ["diverged"]
    out = cli("tasks", "-n", rush.network_id, "--state", "queued", "--limit", "1", "--json", config=config)
    assert len(json.loads(out.stdout)) == 1
    text = cli("tasks", "-n", rush.network_id, "--state", "failed", config=config)
    assert "diverged" in text.stdout


def test_logs_level_and_worker_filter(busy, config):
    rush, w = busy
    out = cli("logs", "-n", rush.network_id, config=config)
    assert "hello from the worker" in out.stdout and "noise" in out.stdout
    out = cli("logs", "-n", rush.network_id, "--level", "warning", "--json", config=config)
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["msg"] for d in docs] == ["hello from the worker", "=HYPERLINK(1)"]  # WARNING and above
    out = cli("logs", "-n", rush.network_id, "--worker", "w-nobody", config=config)
    # not silence (issue 20 defect 6): it says that the filter matched none of the records
    assert out.returncode == 0 and "none of the 3 log record(s)" in out.stdout and "--worker" in out.stdout


def test_logs_follow_prints_new_records(busy, config):
    rush, w = busy
    proc = subprocess.Popen([sys.executable, "-m", "rushhpc", "logs", "-n", rush.network_id, "--follow", "--interval",
                             "0.1"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, RUSHHPC_REDIS_URL=config.url()), start_new_session=True)
    try:
        rush.connector.xadd(rush.keys.log, {"worker_id": w.worker_id, "level": "INFO", "logger": "x", "msg": "later"})
        lines: list[str] = []
        wait_until(lambda: lines.append(proc.stdout.readline()) or any("later" in x for x in lines), 20,
                   what="the followed record")
    finally:
        proc.terminate()
        proc.wait(10)


def test_top_once(busy, config):
    rush, w = busy
    out = cli("top", "-n", rush.network_id, "--once", config=config)
    assert out.returncode == 0 and "workers running 1/1" in out.stdout and w.worker_id in out.stdout


def test_stop_terminate_then_kill(rush, config):
    # no heartbeat: an in-process worker's heartbeat would SIGKILL this test process on a kill request
    w = RushWorker(rush.network_id, config=config)
    out = cli("stop", "-n", rush.network_id, config=config)
    assert out.returncode == 2 and "--all" in out.stderr
    out = cli("stop", "-n", rush.network_id, "w-nobody", config=config)
    assert out.returncode == 2 and "no worker w-nobody" in out.stderr
    out = cli("stop", "-n", rush.network_id, w.worker_id, "--json", config=config)
    assert out.returncode == 0 and json.loads(out.stdout)["workers"] == [w.worker_id]
    assert w.terminated
    out = cli("stop", "-n", rush.network_id, "--all", "--kill", config=config)
    assert out.returncode == 0 and "1 worker(s) killed" in out.stdout
    assert rush.killed_worker_ids == [w.worker_id]
    w.close()


def test_reset_asks_then_deletes(rush, config):
    w = RushWorker(rush.network_id, config=config)
    rush.push_tasks([{"x": 1}])
    out = cli("reset", rush.network_id, config=config)  # not a terminal, no --yes: refused
    assert out.returncode == 2 and "--yes" in out.stderr and rush.exists()
    out = cli("reset", rush.network_id, "--yes", config=config)
    assert out.returncode == 0, out.stderr
    assert list(rush.connector.scan_iter(match=rush.keys.pattern)) == []
    w.close()


@pytest.mark.parametrize("cmd", [["networks"], ["workers", "-n", "x"], ["tasks", "-n", "x"], ["logs", "-n", "x"],
                                 ["top", "-n", "x", "--once"], ["stop", "-n", "x", "--all"], ["reset", "x", "--yes"],
                                 ["monitor", "x", "--once"]])
def test_inspection_without_redis_fails_clearly(cmd):
    out = cli(*cmd)
    assert out.returncode == 2, out
    assert out.stderr.startswith("rushhpc: error: no Redis is configured") and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("cmd", [["workers"], ["tasks"], ["logs"], ["top", "--once"], ["stop", "--all"],
                                 ["reset", "--yes"]])
def test_missing_network_fails_clearly(cmd, config):
    out = cli(*cmd, "-n", "no-such-net", config=config)
    assert out.returncode == 2 and "no network 'no-such-net'" in out.stderr and "Traceback" not in out.stderr
    assert not config.connect().exists("{no-such-net}:meta")
