"""A job killed for its memory is retried with more (issue 17, part 4: "Out of memory: retry with more").

Without a cluster or Redis: the memory parser (`rushhpc.core.memory`), the retry rule, its checks in the words of
each interface (a launcher option in Python, a YAML key in a sweep), and that ``mem_retry``/``mem_max`` never
reach a batch script. On the real SLURM test cluster (marker ``slurm``; OverMemoryKill, gather every 1 s,
scripts/slurm-cluster.sh): a worker killed at ``mem`` is replaced by a job asking ``mem * mem_retry``, which
finishes the task; and the growth stops at ``mem_max``, said so.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
from support import wait_until
from support.batch_backends import SlurmBackend, require

from rushhpc import queue_loop
from rushhpc.sweeps.config import SweepConfigError, load_config

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------ Python: launcher options


# ------------------------------------------------------------------ a sweep: YAML keys
def _sweep(tmp_path: Path, launcher: str, resources: dict) -> dict:
    (tmp_path / "f.py").write_text("def g(x):\n    return x\n")
    return {"objective": "f.py:g", "space": {"x": {"type": "float", "low": 0, "high": 1}}, "budget": 4,
            "workers": {"launcher": launcher, "resources": resources}, "redis": {"url": "redis://127.0.0.1:1"}}


@pytest.mark.parametrize("launcher, resources, message", [
    ("slurm", {"mem_retry": 2}, "workers.resources.mem_retry: multiplies mem, and mem is not set"),
    ("slurm", {"mem": "1G", "mem_retry": 1}, "workers.resources.mem_retry: expected a factor > 1"),
    ("slurm", {"mem": "1G", "mem_max": "4G"}, "workers.resources.mem_max: caps the growth of mem_retry"),
    ("slurm", {"mem": "1G", "mem_retry": 2, "mem_max": "1x"}, "workers.resources.mem_max: '1x' is not a memory size"),
    ("pbs", {"mem": 400, "mem_retry": 2}, "workers.resources.mem: 400 has no unit, which PBS reads as bytes"),
    ("local", {"mem": "1G", "mem_retry": 2}, "workers.resources.mem_retry: retries a batch job killed for its "
                                             "memory: launcher slurm or pbs, not local"),
])
def test_a_sweep_names_the_yaml_key(tmp_path, launcher, resources, message):
    # part 4: a sweep's error names workers.resources.<key>, before anything starts
    with pytest.raises(SweepConfigError, match=message.replace(".", r"\.")):
        load_config(_sweep(tmp_path, launcher, resources), cwd=tmp_path)
    good = load_config(_sweep(tmp_path, "slurm", {"mem": "300M", "mem_retry": 2, "mem_max": "2G"}), cwd=tmp_path)
    assert good["workers"]["resources"] == {"mem": "300M", "mem_retry": 2, "mem_max": "2G"}


# ------------------------------------------------------------------ the test cluster
def _hog(mb: int, hold: float = 3.0):
    """Hold ``mb`` megabytes resident (bytearray zero-fills: every page touched) long enough for a gather."""
    block = bytearray(mb * 1024 * 1024)
    time.sleep(hold)
    return {"y": len(block) // (1024 * 1024)}


def _job_mem(job_id: str) -> str:
    """What SLURM was asked for: ``scontrol show job``'s MinMemoryNode (or ReqMem from sacct once it is gone)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    for part in out.stdout.split():
        if part.startswith("MinMemoryNode="):
            return part.split("=", 1)[1]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "ReqMem"], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def _workers(r) -> dict:
    return {row["worker_id"]: row for row in r.worker_rows()}


def _lineage(r, first: str, n: int, deadline: float) -> list[str]:
    """The first worker and ``n`` replacements, each replacing the one before (mem_retry_of)."""
    chain = [first]

    def grown():
        by_parent = {row["mem_retry_of"]: w for w, row in _workers(r).items() if row["mem_retry_of"]}
        while chain[-1] in by_parent and len(chain) <= n:
            chain.append(by_parent[chain[-1]])
        return len(chain) == n + 1
    wait_until(grown, deadline, interval=0.5, what=f"{n} replacement(s) asking more memory, after {chain}")
    return chain


@pytest.mark.slurm
@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_a_job_killed_for_its_memory_is_retried_with_more_and_finishes(batch, backend):
    # part 4 (Done when: "The OOM retry asks for more memory on the test cluster's enforced --mem, and the task
    # then finishes"): killed at 300M, the replacement asks 600M and finishes the 380 MB task
    r = batch(heartbeat_expire=20, mem="300M", mem_retry=2)
    [first] = r.start_workers(queue_loop, n_workers=1, fun=_hog)
    r.start_monitor(interval=0.5, keep_workers=True, restart_budget=1)
    [key] = r.push_tasks([{"mb": 380}], max_retries=1)
    first_job = _workers(r)[first]["job_id"]
    _, second = _lineage(r, first, 1, 120)
    rows = _workers(r)
    assert rows[first]["state"] == "lost" and rows[first]["reason"] == "out_of_memory", rows[first]
    assert rows[first]["mem"] == "300M" and rows[second]["mem"] == "600M" and rows[second]["mem_retry_of"] == first
    assert "#SBATCH --mem=600M" in Path(r.record(second).extra["script"]).read_text()
    assert _job_mem(r.record(second).job_id or "") == "600M" and _job_mem(first_job) == "300M"  # what SLURM enforced
    r.wait_for_tasks([key], timeout=90)
    [row] = r.fetch_finished_tasks().to_dict("records")
    assert row["y"] == 380 and row["worker_id"] == second
    decision = (f"worker {first} ran out of memory with mem=300M: its replacement {second} asks mem=600M "
                "(mem_retry 2, attempt 1)")
    # finished, so no condition (that would mark it failed); the decision is in its xs_extra, a table column
    assert row["out_of_memory"] == decision and pd.isna(row.get("condition")), row
    assert r.connector.hget(r.keys.worker(second), "mem_decision") == decision
    assert r.worker_info.set_index("worker_id").loc[second, "mem"] == "600M"  # worker_info's column
    r.stop_monitor()


@pytest.mark.slurm
@pytest.mark.parametrize("backend", ["slurm"], indirect=True)
def test_the_retry_stops_growing_at_mem_max_and_says_so(batch, backend):
    # part 4: 300M -> 450M (capped at mem_max) -> 450M again (mem_max reached, said so); the task, with one
    # retry, fails after its second out-of-memory end and its condition says what was decided
    r = batch(heartbeat_expire=20, mem="300M", mem_retry=2, mem_max="450M")
    [first] = r.start_workers(queue_loop, n_workers=1, fun=_hog)
    r.start_monitor(interval=0.5, keep_workers=True, restart_budget=2)
    [key] = r.push_tasks([{"mb": 700}], max_retries=1)
    _, second, third = _lineage(r, first, 2, 150)
    rows = _workers(r)
    assert [rows[w]["mem"] for w in (first, second, third)] == ["300M", "450M", "450M"]
    assert rows[second]["reason"] == "out_of_memory" and rows[third]["mem_retry_of"] == second
    decisions = r.worker_field([second, third], "mem_decision")
    assert decisions[0] == (f"worker {first} ran out of memory with mem=300M: its replacement {second} asks "
                            "mem=450M (mem_retry 2, attempt 1, capped at mem_max)")
    assert decisions[1] == (f"worker {second} ran out of memory at mem_max (450M): its replacement {third} asks "
                            "mem=450M again (mem_max reached, mem_retry grows it no further)")
    assert _job_mem(r.record(third).job_id or "") == "450M"
    wait_until(lambda: r.n_failed_tasks == 1, 30, interval=0.5, what="the task to fail (its one retry used)")
    failed = r.fetch_failed_tasks()
    condition = failed["condition"].item()
    assert condition.startswith(f"worker {second} was lost: its job ran out of memory"), condition
    assert condition.endswith(f"; no retry left, not retried: {decisions[1]}"), condition
    assert failed["out_of_memory"].item() == decisions[0]  # its first, requeued, loss: in its xs_extra
    detail = json.loads(r.connector.hget(r.keys.task(key), "condition"))["out_of_memory"]
    assert detail == {"worker": second, "mem": "450M", "replacement": third, "replacement_mem": "450M",
                      "mem_retry": 2.0, "attempt": 2, "mem_max_reached": True}
    r.stop_monitor()


@pytest.mark.slurm
def test_a_sweep_retries_a_job_killed_for_its_memory_with_more(config, tmp_path):
    # part 4 through `rushhpc sweep` (the engine's replacement path): workers.resources.mem_retry makes the
    # replacement of the worker killed at 300M ask 600M; the evaluation finishes and the decision is shown
    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")
    pw = tmp_path / "redis.pw"
    pw.write_text(config.password + "\n")
    pw.chmod(0o600)
    (tmp_path / "hog.py").write_text("import time\n\ndef hog(mb):\n    block = bytearray(mb * 1024 * 1024)\n"
                                     "    time.sleep(3)\n    return {'y': len(block) // (1024 * 1024)}\n")
    (tmp_path / "s.yaml").write_text(
        "objective: hog.py:hog\nmetric: y\nspace: {mb: {type: categorical, choices: [380]}}\nstrategy: grid\n"
        "retries: 1\ntimeout: 2m\nbudget: {walltime: 3m}\n"
        "workers: {n: 1, launcher: slurm, restarts: 1, heartbeat_period: 1, heartbeat_expire: 20,\n"
        "  resources: {partition: debug, time: '00:05:00', mem: 300M, mem_retry: 2, poll_interval: 0.5,"
        " max_poll_interval: 2}}\n"
        f"redis: {{url: 'redis://127.0.0.1:{config.port}/0', password_file: '{pw}'}}\noutput: {tmp_path / 'out'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    run = subprocess.run([sys.executable, "-m", "rushhpc", "sweep", str(tmp_path / "s.yaml"), "progress=plain"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["state"] == "finished" and float(row["y"]) == 380, row
    m = re.search(r"worker (w-\S+) ran out of memory with mem=300M: its replacement (w-\S+) asks mem=600M "
                  r"\(mem_retry 2, attempt 1\)", text)
    assert m, text[-3000:]
    assert text.count(m.group(0)) == 1  # said once
    assert row["worker_id"] == m.group(2)  # the evaluation finished on the replacement with more memory
