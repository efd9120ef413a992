"""The srun launcher (issue 17 part 2): workers across the nodes of one SLURM allocation as one srun step.

Unit tests read real scontrol and srun output; the `slurm` tests run managers and sweeps inside
`sbatch -N 3` allocations of the project's test cluster (three nodes n1..n3 on this host).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from support import REPO, wait_until
from support.batch_backends import REPO, SlurmBackend, require

from rushhpc import rsh, rush_plan
from rushhpc.errors import RushConfigError
from rushhpc.launchers.slurm.states import allocation_cpus, parse_node, parse_task_lines
from rushhpc.launchers.srun import SrunLauncher, reachable_address

# `scontrol show node n2` on the test cluster (SLURM 22.05.8), as printed
SCONTROL_TEST_CLUSTER = """\
NodeName=n2 Arch=x86_64 CoresPerSocket=1
   CPUAlloc=0 CPUEfctv=4 CPUTot=4 CPULoad=0.66
   AvailableFeatures=(null)
   ActiveFeatures=(null)
   Gres=(null)
   NodeAddr=127.0.0.1 NodeHostName=vm Port=17002 Version=22.05.8
   OS=Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0
   RealMemory=4000 AllocMem=0 FreeMem=23002 Sockets=4 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
"""
# `scontrol -o show node` of a site whose NodeAddr is the node's name (the usual case): it is resolved
SCONTROL_SITE_BY_NAME = ("NodeName=cn042 Arch=x86_64 CoresPerSocket=32  CPUAlloc=64 CPUTot=64 CPULoad=12.01 "
                         "AvailableFeatures=ib,avx512 ActiveFeatures=ib,avx512 Gres=gpu:a100:4 NodeAddr=cn042 "
                         "NodeHostName=cn042 Version=22.05.8 OS=Linux 4.18.0 RealMemory=515000 State=MIXED")
SCONTROL_SITE_BY_IP = SCONTROL_SITE_BY_NAME.replace("NodeAddr=cn042", "NodeAddr=10.12.3.42")
# srun's stderr in an allocation of the test cluster: task 1 exited 3, task 2 was SIGKILLed
SRUN_STDERR = """\
srun: error: n1: task 1: Exited with exit code 3
srun: error: n2: task 2: Killed
srun: Force Terminated StepId=290.0
srun: error: n3: tasks 4-5,7: Terminated
"""

MULTI = {"SLURM_JOB_ID": "290", "SLURM_JOB_NUM_NODES": "3", "SLURMD_NODENAME": "n2"}


def test_task_lines_of_srun_name_each_dead_task():
    assert parse_task_lines(SRUN_STDERR) == {1: 3, 2: -9, 4: -15, 5: -15, 7: -15}
    assert parse_task_lines("srun: Force Terminated StepId=290.0\n") == {}


def test_address_of_the_test_clusters_batch_node_is_its_node_addr():
    asked = []

    def scontrol(node):
        asked.append(node)
        return SCONTROL_TEST_CLUSTER

    assert parse_node(SCONTROL_TEST_CLUSTER)["NodeAddr"] == "127.0.0.1"
    assert reachable_address(MULTI, scontrol=scontrol) == "127.0.0.1"
    assert asked == ["n2"]  # $SLURMD_NODENAME, as SLURM knows the batch node


def test_address_on_a_site_resolves_node_addr_and_never_is_any():
    names = {"cn042": "10.12.3.42"}
    env = {**MULTI, "SLURMD_NODENAME": "cn042"}
    assert reachable_address(env, scontrol=lambda n: SCONTROL_SITE_BY_NAME, resolve=names.get) == "10.12.3.42"
    assert reachable_address(env, scontrol=lambda n: SCONTROL_SITE_BY_IP, resolve=lambda n: None) == "10.12.3.42"
    # scontrol says nothing: this host's name is resolved instead; an unresolvable one is an error, not 0.0.0.0
    assert reachable_address(env, scontrol=lambda n: "", resolve=lambda n: "10.0.0.9") == "10.0.0.9"
    with pytest.raises(RushConfigError, match="redis: {url"):
        reachable_address(env, scontrol=lambda n: "NodeAddr=0.0.0.0", resolve=lambda n: None)


def test_address_is_loopback_for_one_node_or_no_allocation():
    never = lambda n: pytest.fail("no scontrol call for one node")  # noqa: E731
    assert reachable_address({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"}, scontrol=never) == "127.0.0.1"
    assert reachable_address({}, scontrol=never) == "127.0.0.1"


def test_allocation_cpus_and_the_step_command(tmp_path):
    assert allocation_cpus("4(x2),2") == 10 and allocation_cpus("") == 0

    class Ctx:
        network_id, run_dir = "net", tmp_path

    argv = SrunLauncher(Ctx(), {"cpus_per_task": 2, "gpus_per_worker": 1, "srun_options": ["--exclusive"]}).srun_argv(
        "w-ab", 24, {"cpus_per_task": 2, "gpus_per_worker": 1, "srun_options": ["--exclusive"]})
    # task i writes worker w-ab-i's files, where wait_for_workers' error and stderr_tail read them
    assert f"--error={tmp_path}/workers/w-ab-%t.err" in argv and "--job-name=rushhpc-ab" in argv
    assert {"--ntasks=24", "--kill-on-bad-exit=0", "--overlap", "--cpus-per-task=2", "--gpus-per-task=1",
            "--exclusive"} <= set(argv)
    with pytest.raises(RushConfigError, match="unknown srun launcher option"):
        SrunLauncher(Ctx(), {"nodes": 2})


def test_srun_outside_an_allocation_is_one_line_naming_the_fix(config, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    rush_plan(worker_type="srun")
    rush = rsh(config=config)
    with pytest.raises(RushConfigError) as e:
        rush.start_workers(lambda rush: None, n_workers=2)
    assert "\n" not in str(e.value) and "sbatch" in str(e.value) and "SLURM_JOB_ID" in str(e.value)
    assert rush.records() == {}


def test_sweep_with_srun_outside_an_allocation_names_the_yaml_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (tmp_path / "obj.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "s.yaml").write_text("objective: obj.py:f\nspace: {x: {type: float, low: 0, high: 1}}\n"
                                     "budget: {evaluations: 2}\nworkers: {launcher: srun, n: 2}\n")
    run = subprocess.run([sys.executable, "-m", "rushhpc", "sweep", str(tmp_path / "s.yaml")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "workers.launcher: srun" in run.stderr and "sbatch" in run.stderr, run.stderr


def test_embedded_redis_refuses_to_listen_everywhere():
    from rushhpc.server.embedded import EmbeddedRedis

    with pytest.raises(RushConfigError, match="one address"):
        EmbeddedRedis("0.0.0.0")


# ---------------------------------------------------------------- on the test cluster
def _slurm() -> None:
    require("slurm", SlurmBackend.available(), "start it with scripts/slurm-cluster.sh start")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUSHHPC_REDIS_URL", "REDIS_URL", "RUSHHPC_CONFIG")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO)
    return env


MANAGER = textwrap.dedent("""
    import json, os, signal, sys, time
    from rushhpc import rsh, rush_plan
    from rushhpc.server.embedded import embedded_redis
    from rushhpc.launchers.srun import reachable_address
    from rushhpc.worker.loops import queue_loop

    def f(x):
        import os, time
        time.sleep(0.2)
        return {"y": x, "node": os.environ["SLURMD_NODENAME"]}

    out = {}
    cfg = embedded_redis(reachable_address())
    rush_plan(worker_type="srun", heartbeat_period=1, heartbeat_expire=120)  # a dead task: not by expiry
    r = rsh("srun-test", config=cfg)
    t0 = time.monotonic()
    ids = r.start_workers(queue_loop, n_workers=6, fun=f)
    r.wait_for_workers(worker_ids=ids, timeout=60)
    out["registered_s"] = time.monotonic() - t0
    info = r.worker_info.set_index("worker_id")
    out["nodes"] = {w: info.node[w] for w in ids}
    keys = r.push_tasks([{"x": i} for i in range(12)])
    r.wait_for_tasks(keys, timeout=60)
    out["task_nodes"] = sorted(set(r.fetch_finished_tasks().node))
    victim = [w for w in ids if info.node[w] == "n2"][0]
    os.kill(int(info.pid[victim]), signal.SIGKILL)
    t1 = time.monotonic()
    lost = []
    while victim not in lost and time.monotonic() - t1 < 30:
        lost += r.detect_lost_workers()
        time.sleep(0.1)
    out["victim"], out["lost_s"] = victim, time.monotonic() - t1
    out["states"] = dict(r.worker_info.set_index("worker_id").state)
    # one worker of the step killed through the kill list: the step and the other tasks go on
    one = [w for w in ids if w != victim][0]
    t2 = time.monotonic()
    r.stop_workers(type="kill", worker_ids=[one])
    out["one_killed_s"] = time.monotonic() - t2
    out["one"] = one
    out["ended_after_one"] = sorted(r.launcher("srun").ended())
    out["steps_after_one"] = os.popen(f"squeue -h -s -j {os.environ['SLURM_JOB_ID']} -o %i").read().split()
    r.stop_workers(type="kill")
    out["steps_after_kill"] = os.popen(f"squeue -h -s -j {os.environ['SLURM_JOB_ID']} -o %i").read().split()
    import types
    mod = types.ModuleType("not_there")  # pickled by reference: the workers cannot import it
    exec("def loop(rush):\\n    pass", mod.__dict__)
    mod.loop.__module__ = "not_there"
    sys.modules["not_there"] = mod
    try:
        r.wait_for_workers(worker_ids=r.start_workers(mod.loop, n_workers=2), timeout=60)
        out["bad_start"] = "started"
    except Exception as e:
        out["bad_start"] = str(e)
    print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.mark.slurm
def test_workers_of_one_step_on_three_nodes_and_a_dead_task_is_lost_at_once(tmp_path):
    _slurm()
    (tmp_path / "mgr.py").write_text(MANAGER)
    run = subprocess.run(["sbatch", "--wait", "-N", "3", "--ntasks-per-node=2", "--time=00:05:00", f"--output={tmp_path}/job.out",
                          "--export=ALL", "--wrap", f"{sys.executable} {tmp_path}/mgr.py"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert run.returncode == 0, run.stderr + log[-3000:]
    out = json.loads(log.split("RESULT ", 1)[1])
    assert sorted(set(out["nodes"].values())) == ["n1", "n2", "n3"]
    assert out["task_nodes"] == ["n1", "n2", "n3"]
    # heartbeat_expire is 120 s: srun's own report of the task made it lost
    assert out["states"][out["victim"]] == "lost" and out["lost_s"] < 5, out
    assert {s for w, s in out["states"].items() if w != out["victim"]} == {"running"}
    assert out["ended_after_one"] == sorted([out["victim"], out["one"]]) and out["one_killed_s"] < 5, out
    assert len([s for s in out["steps_after_one"] if not s.endswith(".batch")]) == 1  # the step goes on
    assert [s for s in out["steps_after_kill"] if not s.endswith(".batch")] == []  # scancel of the step
    # a worker that cannot start: wait_for_workers names it with its own stderr and srun's line
    assert "No module named 'not_there'" in out["bad_start"] and "srun: error:" in out["bad_start"], out["bad_start"]


OBJECTIVE = textwrap.dedent("""
    import os, time

    def f(x):
        time.sleep(float(os.environ.get("SRUN_TEST_SLEEP", "1")))
        with open(os.environ["SRUN_TEST_LOG"], "a") as log:  # one line per completed evaluation
            log.write(f"{x!r} {os.environ['SLURMD_NODENAME']}\\n")
        return {"y": x}
""")


def _sweep_files(tmp_path: Path, n: int) -> tuple[Path, dict[str, str]]:
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(textwrap.dedent(f"""
        objective: obj.py:f
        metric: y
        space: {{x: {{type: float, low: 0.0, high: 1.0}}}}
        strategy: random
        budget: {{evaluations: {n}}}
        retries: 1                       # a point whose worker died is requeued once
        workers: {{launcher: srun, n: 2, heartbeat_period: 1, heartbeat_expire: 60, restarts: 0}}
        redis: embedded
        output: {tmp_path}/out
        seed: 3
    """))
    env = _env()
    env.update(SWEEP_CONFIG=str(cfg), SWEEP_WALLTIME="4m", SRUN_TEST_LOG=str(tmp_path / "evals.log"))
    assert shutil.which("rushhpc", path=env["PATH"]), "the rushhpc command must be on PATH for the job"
    return cfg, env


def _results(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _completed(tmp_path: Path) -> Counter:
    return Counter(line.split()[0] for line in (tmp_path / "evals.log").read_text().splitlines())


def _workers_of(job_id: str) -> dict[int, str]:
    """pid -> node of the worker processes of this job's srun steps (the cluster's nodes are this host)."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            env = dict(e.split(b"=", 1) for e in (p / "environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if b"worker" in cmd and b"--launcher" in cmd and cmd[cmd.index(b"--launcher") + 1] == b"srun" \
                and env.get(b"SLURM_JOB_ID") == job_id.encode() and env.get(b"SLURM_STEP_ID", b"batch") != b"batch":
            found[int(p.name)] = env.get(b"SLURMD_NODENAME", b"").decode()
    return found


@pytest.mark.slurm
def test_example_allocation_sweep_on_three_nodes_survives_a_killed_worker(tmp_path):
    _slurm()
    _, env = _sweep_files(tmp_path, 18)
    job = subprocess.Popen(["sbatch", "--wait", "--parsable", "-N", "3", "--ntasks-per-node=2", "--time=00:06:00",
                            f"--output={tmp_path}/job.out", "--export=ALL", "examples/sweep_slurm_allocation.sbatch"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job_id = wait_until(lambda: next(iter(
            [ln.split()[0] for ln in subprocess.run(["squeue", "-h", "-n", "sweep-train", "-o", "%i"],
                                                    capture_output=True, text=True).stdout.split("\n") if ln]), None),
                            timeout=60, what="the job in squeue")
        # all six workers started, on the three nodes; then one on n2 is SIGKILLed mid-evaluation
        workers = wait_until(lambda: (w := _workers_of(job_id)) and len(w) == 6 and w, timeout=120,
                             what="six srun workers")
        assert sorted(set(workers.values())) == ["n1", "n2", "n3"]
        log = tmp_path / "evals.log"  # registered and evaluating (1 s each)
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, timeout=120, what="3 evaluations")
        time.sleep(0.3)
        os.kill(next(pid for pid, node in workers.items() if node == "n2"), signal.SIGKILL)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    log = (tmp_path / "job.out").read_text()
    assert job.returncode == 0, err + log[-3000:]
    rows = _results(tmp_path)
    assert len(rows) == 18 and {r["state"] for r in rows} == {"finished"}, log[-3000:]
    assert sorted(int(r["eval"]) for r in rows) == list(range(18))
    assert {r["node"] for r in rows} == {"n1", "n2", "n3"}  # evaluations happened on all three nodes
    # detected from srun's report of its task (heartbeat_expire is 60 s, the sweep took seconds); the
    # point it was evaluating was requeued (retries: 1) and finished on another worker: no failed row
    # (with retries: 0 that point is a failed row), and every point completed exactly once
    killed = re.search(r"worker (\S+) process ended \(signal SIGKILL\) while running", log)
    assert killed, log[-3000:]
    assert set(_completed(tmp_path).values()) == {1} and len(_completed(tmp_path)) == 18  # each point once


@pytest.mark.slurm
def test_resume_after_scancel_of_the_allocation_evaluates_nothing_twice(tmp_path):
    _slurm()
    _, env = _sweep_files(tmp_path, 24)
    args = ["sbatch", "--parsable", "-N", "3", "--ntasks-per-node=2", "--time=00:06:00", "--export=ALL",
            "examples/sweep_slurm_allocation.sbatch"]
    first = subprocess.run([*args[:1], *args[1:-1], f"--output={tmp_path}/job1.out", args[-1]], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.strip().split(";")[0]
    log = tmp_path / "evals.log"
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 8, timeout=180, what="8 evaluations")
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip(),
               timeout=60, what="the cancelled job to leave the queue")
    wait_until(lambda: not _workers_of(job_id), timeout=30, what="no worker of the cancelled job left")
    done_before = len(_completed(tmp_path))
    assert done_before < 24
    second = subprocess.run([*args[:1], "--wait", *args[1:-1], f"--output={tmp_path}/job2.out", args[-1]], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr + (tmp_path / "job2.out").read_text()[-3000:]
    rows = _results(tmp_path)
    assert len(rows) == 24 and {r["state"] for r in rows} == {"finished"}
    assert sorted(int(r["eval"]) for r in rows) == list(range(24))
    assert len({r["x"] for r in rows}) == 24
    completed = _completed(tmp_path)
    assert len(completed) == 24 and set(completed.values()) == {1}, completed  # nothing evaluated twice


def test_a_local_worker_records_its_host_as_its_node(rush):
    # issue 17 part 2: every worker says where it runs (SLURMD_NODENAME under SLURM, else its host name)
    import socket

    from rushhpc.worker.loops import queue_loop

    ids = rush.start_local_workers(queue_loop, n_workers=1, fun=abs)
    rush.wait_for_workers(worker_ids=ids, timeout=60)
    assert list(rush.worker_info.node) == [socket.gethostname()]
    rush.stop_workers(type="kill")
