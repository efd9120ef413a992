"""Each scheduler's environment is read in its own folder, found through the registry (issue 18):
a worker asks `job_environment()` and never names a SLURM or PBS variable itself."""

from __future__ import annotations

from rushhpc.launchers.registry import BUILTIN, job_environment, job_environment_modules


def test_a_slurm_array_task_is_read_by_the_slurm_folder():
    env = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2", "SLURMD_NODENAME": "n3"}
    fields = job_environment(env).fields()
    assert fields["scheduler"] == "slurm" and fields["job_id"] == "10_2" and fields["node"] == "n3"
    assert fields["array_index"] == "2"


def test_a_pbs_job_is_read_by_the_pbs_folder_and_no_job_is_none():
    assert job_environment({"PBS_JOBID": "41.pbs"}).fields()["scheduler"] == "pbs"
    assert job_environment({"HOME": "/root"}) is None


def test_every_scheduler_folder_is_found_from_its_launcher_line_alone():
    # adding a scheduler is its folder and its BUILTIN line: the environment is found beside launcher.py
    folders = [t.partition(":")[0].rpartition(".")[0] for t in BUILTIN.values() if t.partition(":")[0].endswith(".launcher")]
    assert job_environment_modules() == [f + ".environment" for f in folders] and folders
