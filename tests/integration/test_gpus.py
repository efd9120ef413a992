"""A GPU per worker (issue 17): the visible list, disjoint shares, refusals before anything starts."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import cloudpickle
import pytest
import yaml
from support import wait_until

from rushhpc.errors import RushConfigError

# Workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------- through a sweep and the manager
def _gpu_sweep(tmp_path, n: int, per_worker: int, evaluations: int = 8):
    code = "import os, json; print(json.dumps({{'y': 1, 'dev': os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}}))"
    doc = {"objective": {"command": [sys.executable, "-c", code]}, "space": {"x": {"type": "float", "low": 0, "high": 1}},
           "budget": {"evaluations": evaluations}, "workers": {"n": n, "launcher": "local", "gpus_per_worker": per_worker},
           "redis": "embedded", "output": "runs/gpu"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1,2,3")
    return subprocess.run([sys.executable, "-m", "rushhpc", "sweep", "sweep.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)


def _devices_by_worker(tmp_path) -> dict[str, set[str]]:
    with open(tmp_path / "runs" / "gpu" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["state"] == "finished" for r in rows)
    seen: dict[str, set[str]] = {}
    for r in rows:
        seen.setdefault(r["worker_id"], set()).add(r["dev"])
    return seen


def test_four_local_workers_each_see_their_own_gpu(tmp_path):
    out = _gpu_sweep(tmp_path, n=4, per_worker=1, evaluations=12)
    assert out.returncode == 0, out.stderr
    seen = _devices_by_worker(tmp_path)
    assert all(len(devs) == 1 for devs in seen.values()), seen  # every evaluation of a worker saw its one device
    devices = [next(iter(d)) for d in seen.values()]
    assert all("," not in d for d in devices) and len(set(devices)) == len(devices)
    assert set(devices) <= {"0", "1", "2", "3"}


def test_two_workers_with_two_gpus_each_see_disjoint_pairs(tmp_path):
    out = _gpu_sweep(tmp_path, n=2, per_worker=2)
    assert out.returncode == 0, out.stderr
    pairs = [set(next(iter(d)).split(",")) for d in _devices_by_worker(tmp_path).values()]
    assert all(len(p) == 2 for p in pairs) and (len(pairs) < 2 or not pairs[0] & pairs[1]), pairs


def test_more_workers_than_gpus_is_refused_before_anything_starts(tmp_path):
    out = _gpu_sweep(tmp_path, n=5, per_worker=1)
    assert out.returncode == 2
    assert "workers.gpus_per_worker: 5 workers x gpus_per_worker 1 need 5 GPUs, but 4 are free" in out.stderr
    assert not (tmp_path / "runs" / "gpu" / "results.csv").exists()


def gpu_loop(rush, **_):
    # a worker loop reporting the devices it was given, then idling until stopped
    rush.push_running_tasks([{"dev": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}])
    while not rush.terminated:
        time.sleep(0.05)


def test_a_replacement_worker_takes_the_gpus_its_predecessor_freed(rush, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    opts = {"launcher_options": {"gpus_per_worker": 1}}

    def devices() -> dict[str, str]:  # worker id -> the devices it reported
        return {t["worker_id"]: t["dev"] for t in rush.fetch_tasks().to_dict("records")}

    first = rush.start_local_workers(gpu_loop, n_workers=2, **opts)
    wait_until(lambda: len(devices()) == 2, 60, what="two workers reporting their GPUs")
    assert set(devices().values()) == {"6", "7"}
    with pytest.raises(RushConfigError, match=r"gpus_per_worker: 1 workers x gpus_per_worker 1 need 1 GPUs, but 0"):
        rush.start_local_workers(gpu_loop, n_workers=1, **opts)
    freed = devices()[first[0]]
    rush.stop_workers(worker_ids=first[:1], type="kill")
    wait_until(lambda: first[0] in rush.launcher("local").ended(), 30, what="the first worker's process to end")
    again = rush.start_local_workers(gpu_loop, n_workers=1, **opts)
    wait_until(lambda: again[0] in devices(), 60, what="the replacement reporting")
    assert devices()[again[0]] == freed
    rush.stop_workers(type="kill")
