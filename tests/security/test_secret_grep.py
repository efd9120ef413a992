"""The Redis password and the signing key, grepped for everywhere they must not be.

A manager with a known password (the session Redis's) starts local workers and, through
the PBS emulator (which really runs jobs), PBS workers, with the password also in its own
environment (``RUSHHPC_REDIS_URL``, which sbatch/qsub would export). While every worker,
heartbeat and job process runs, the test reads ``/proc/<pid>/cmdline`` and
``/proc/<pid>/environ`` of every process on the machine (and checks that those of the
workers, heartbeats and PBS jobs were among them), then greps the rendered batch scripts,
the run directory (logs, scripts), the emulator's spool and logs, Redis's own log, every
value of the network in Redis, the worker log stream, ``worker_info``, ``repr`` and the
HTML repr of the manager, the CLI's JSON, and error messages.

Extends tests/backends/test_batch_scenarios.py::test_secrets_stay_out_of_the_job (the job's
environment as the job sees it, both backends) and the ``ps`` checks of test_tls.py.  Both the
PBS emulator and the SLURM test cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest
from support import wait_until
from support.batch_backends import PbsBackend, SlurmBackend, require

import rushhpc
from rushhpc import RushConfigError, RushWorkerError, redis_config, rush_plan

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HB = {"heartbeat_period": 0.5, "heartbeat_expire": 4}


def hold_loop(rush):
    """Holds one running task until asked to terminate (so every process is alive while grepped)."""
    keys = rush.push_running_tasks([{"x": 1}])
    rush.finish_tasks(keys, [{"y": 1}])
    keys = rush.push_running_tasks([{"x": 2}])
    while not rush.terminated:
        time.sleep(0.05)
    rush.finish_tasks(keys, [{"y": 2}])


def all_processes() -> dict[int, tuple[bytes, bytes]]:
    """pid -> (cmdline, environ) of every process whose files this user can read."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            out[int(d.name)] = ((d / "cmdline").read_bytes(), (d / "environ").read_bytes())
        except OSError:  # ended meanwhile, or not ours
            continue
    return out


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def grep_files(secrets: list[bytes], paths: list[Path]) -> list[str]:
    hits = []
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        hits += [f"{p}: {s[:6]!r}..." for s in secrets if s in data]
    return hits


BACKENDS = {
    "pbs": PbsBackend,
    "slurm": SlurmBackend,
}


@pytest.fixture(params=["pbs", "slurm"])
def batch_backend(request, monkeypatch, tmp_path):
    cls = BACKENDS[request.param]
    if request.param == "pbs":
        monkeypatch.setenv("PATH", f"{cls.bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PBS_EMU_HOME", str(tmp_path / "pbs-emu"))
    require(request.param, cls.available(), "tests/pbs_emulator is needed" if request.param == "pbs"
            else "start it with scripts/slurm-cluster.sh start")
    return cls()


def test_no_secret_anywhere(redis_server, batch_backend, monkeypatch, tmp_path, capsys):
    password = redis_server.password
    assert len(password) >= 16
    config = redis_server.config
    nid = "grep-" + uuid.uuid4().hex[:8]
    rush_plan(config=config, worker_type=batch_backend.worker_type, start_worker_timeout=60, **HB,
              launcher_options={"poll_interval": 0.5, "max_poll_interval": 2, "startup_grace": 30, "time": "00:10:00"})
    rush = rushhpc.rsh(nid)
    try:
        # the manager's environment holds the password: neither local workers nor batch jobs may get it
        monkeypatch.setenv("RUSHHPC_REDIS_URL", config.url())
        local_ids = rush.start_local_workers(hold_loop, n_workers=2, **HB)
        script = rush.render_script(hold_loop, n_workers=2)
        batch_ids = rush.start_workers(hold_loop, n_workers=2)
        rush.wait_for_workers(worker_ids=local_ids + batch_ids, timeout=90)
        wait_until(lambda: rush.n_finished_tasks == 4, 60, what="every worker to finish its first task")
        key = rush.signing_key_file().read_text().strip().encode()
        secrets = [password.encode(), key]

        # processes: every one on the machine, while all workers and heartbeats run
        info = rush.worker_info.set_index("worker_id")
        ours = {int(info.loc[w, "pid"]) for w in local_ids + batch_ids}
        ours |= {int(info.loc[w, "heartbeat_pid"]) for w in local_ids + batch_ids}
        procs = all_processes()
        assert ours <= set(procs), "a worker or heartbeat process was not readable"
        marker = "PBS_JOBID=" if batch_backend.name == "pbs" else "SLURM_JOB_ID="
        jobs = {pid for pid, (_, env) in procs.items() if marker.encode() in env and nid.encode() in env}
        assert len(jobs) >= 2, "the batch jobs' processes were not found"
        leaks = [pid for pid, (cmd, env) in procs.items() if any(s in cmd or s in env for s in secrets)]
        assert leaks == [], f"a secret in argv or environ of {leaks}: " + ", ".join(
            procs[p][0].replace(b"\0", b" ").decode(errors="replace")[:120] for p in leaks)

        # what the manager shows and stores
        for text in (script, repr(rush), rush._repr_html_(), str(rush.config), repr(rush.config),
                     rush.worker_info.to_json(date_format="iso"), rush.read_log().to_json(date_format="iso"),
                     json.dumps(rush.meta()),
                     json.dumps({w: r.dumps() for w, r in rush.records().items()})):
            assert not [s for s in secrets if s.decode() in text]
        raw = config.client(decode_responses=False)
        for k in raw.scan_iter(match=f"{{{nid}}}:*"):
            kind = raw.type(k)
            values = [raw.get(k)] if kind == b"string" else list(raw.hgetall(k).values()) if kind == b"hash" else \
                raw.lrange(k, 0, -1) if kind == b"list" else list(raw.smembers(k)) if kind == b"set" else \
                [v for _, fields in raw.xrange(k) for v in fields.values()] if kind == b"stream" else []
            assert not [k for v in values for s in secrets if s in v], f"a secret in Redis key {k!r}"

        # the CLI's JSON (password from a file: the command line holds only its path)
        pw_file = tmp_path / "pw"
        pw_file.write_text(password + "\n")
        pw_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k != "RUSHHPC_REDIS_URL"}
        out = subprocess.run([sys.executable, "-m", "rushhpc", "workers", "-n", nid, "--json", "--redis",
                              config.public_url(), "--password-file", str(pw_file)],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) and not [s for s in secrets if s.decode() in out.stdout + out.stderr]

        # error messages: a wrong password, and a worker that cannot start
        with pytest.raises(RushConfigError) as e:
            rushhpc.rsh(nid, config=redis_config(port=redis_server.port, password=password[::-1]))
        assert password not in str(e.value) and password[::-1] not in str(e.value)
        missing = tmp_path / "no-such-dir" / "credentials.json"
        with monkeypatch.context() as m:
            m.setattr(rush.network, "credentials_file", lambda: missing)
            bad = rush.start_local_workers(hold_loop, n_workers=1, **HB)
            with pytest.raises(RushWorkerError) as e2:
                rush.wait_for_workers(worker_ids=bad, timeout=30)
        assert not [s for s in secrets if s.decode() in str(e2.value)]

        rush.stop_workers(type="terminate")
        wait_until(lambda: rush.n_running_workers == 0, 60, what="workers to terminate")
    finally:
        rush.stop_workers(type="kill")
        batch_backend.cleanup(f"rushhpc-{nid}")

    # files, once every process ended: logs, scripts, credentials' neighbours, the emulator's spool
    wait_until(lambda: not [p for p in ours if Path(f"/proc/{p}").exists()
                            and Path(f"/proc/{p}/stat").read_text().split(")")[1].split()[0] != "Z"],
               30, what="worker and heartbeat processes to end")
    roots = [rush.run_dir / "workers", rush.run_dir / "scripts"]
    if batch_backend.name == "pbs":
        roots.append(Path(os.environ["PBS_EMU_HOME"]))
    paths = files_under(*roots) + [redis_server.dir / "redis.log"]
    assert len(paths) >= 6 and any(p.suffix == ".sh" for p in paths)
    assert grep_files(secrets, paths) == []
    captured = capsys.readouterr()
    assert not [s for s in secrets if s.decode() in captured.out + captured.err]
    rush.reset()
    rush.close()
