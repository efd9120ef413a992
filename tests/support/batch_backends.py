"""The batch backends the scenario suite runs against: the real SLURM test cluster, and the PBS emulator.

Each backend knows how to do from outside what an admin or the cluster would do
to a job (cancel, suspend, resume, hold) and how to find the job's processes.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support import REPO, slurm_cluster


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def require(what: str, ok: bool, how: str) -> None:
    """Skip with a reason, or fail when CI said this backend must run."""
    if ok:
        return
    if what == "slurm":  # say what is missing, not only how to start the cluster
        how = slurm_cluster.cluster().unavailable_reason() or how
    env = "RUSHHPC_REQUIRE_SLURM" if what == "slurm" else "RUSHHPC_REQUIRE_PBS"
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} backend required ({env}=1) but not available: {how}")
    pytest.skip(f"{what} backend not available: {how}")


class SlurmBackend:
    name = "slurm"
    worker_type = "slurm"

    @staticmethod
    def available() -> bool:
        """The project's test cluster (SLURM_CONF from slurm-cluster.sh env) answers. From then until the
        test ends the test holds the cluster's lock shared: no other test or script restarts it meanwhile."""
        cluster = slurm_cluster.cluster()
        if cluster.unavailable_reason() is not None:
            return False
        cluster.share()
        return True

    def hold_options(self) -> dict:
        return {"extra_directives": ["--hold"]}

    def cancel(self, job_id: str) -> None:
        _run("scancel", job_id)

    def suspend(self, job_id: str) -> None:
        out = _run("scontrol", "suspend", job_id)
        assert out.returncode == 0, out.stderr

    def resume(self, job_id: str) -> None:
        _run("scontrol", "resume", job_id)

    def release(self, job_id: str) -> None:
        _run("scontrol", "release", job_id)

    def cleanup(self, job_name: str) -> None:
        _run("scancel", "--name", job_name)


class PbsBackend:
    name = "pbs"
    worker_type = "pbs"
    bin_dir = REPO / "tests" / "pbs_emulator" / "bin"

    @classmethod
    def available(cls) -> bool:
        return (cls.bin_dir / "qsub").exists() and (REPO / "rushhpc" / "launchers" / "pbs" / "launcher.py").exists()

    def hold_options(self) -> dict:
        return {"extra_directives": ["-h"]}

    def cancel(self, job_id: str) -> None:
        _run("qdel", job_id)

    def suspend(self, job_id: str) -> None:
        out = _run("qsig", "-s", "suspend", job_id)
        assert out.returncode == 0, out.stderr

    def resume(self, job_id: str) -> None:
        _run("qsig", "-s", "resume", job_id)

    def release(self, job_id: str) -> None:
        _run("qrls", job_id)

    def cleanup(self, job_name: str) -> None:
        out = _run("qstat", "-t")
        ids = [line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()]
        if ids:
            _run("qdel", "-W", "force", *ids)
