"""A GPU per worker (issue 17): the visible list, disjoint shares, refusals before anything starts."""

from __future__ import annotations

import stat
import sys

import cloudpickle
import pytest

from rushhpc.launchers.gpus import GpuError, GpuPool, Visible, gpu_environment, visible_gpus

# Workers cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_four_visible_gpus_give_four_workers_one_each_and_a_fifth_is_refused():
    pool = GpuPool(visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}), per_worker=1)
    pool.check(4)
    shares = [pool.take(f"w-{i}") for i in range(4)]
    assert shares == [["0"], ["1"], ["2"], ["3"]]
    with pytest.raises(GpuError, match=r"1 workers x gpus_per_worker 1 need 1 GPUs, but 0 are free .*start at most 0"):
        pool.take("w-4")
    fresh = GpuPool(visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}), per_worker=1)
    with pytest.raises(GpuError, match=r"5 workers x gpus_per_worker 1 need 5 GPUs, but 4 are free"):
        fresh.check(5)


def test_pairs_are_disjoint_and_a_replacement_takes_the_freed_pair():
    pool = GpuPool(Visible(("2", "3", "6", "7"), "CUDA_VISIBLE_DEVICES=2,3,6,7"), per_worker=2)
    a, b = pool.take("w-a"), pool.take("w-b")
    assert a == ["2", "3"] and b == ["6", "7"]
    pool.release("w-a")
    assert pool.take("w-c") == ["2", "3"]
    # a new manager rebuilds the pool from the live workers' records
    again = GpuPool(pool.visible, 2, held={"w-b": ["6", "7"]})
    assert again.free() == ["2", "3"]


def test_no_visible_gpu_is_an_error_not_a_silent_cpu_run(tmp_path):
    empty = visible_gpus({"CUDA_VISIBLE_DEVICES": ""})
    assert empty.ids == ()
    with pytest.raises(GpuError, match=r"no GPU is visible here: CUDA_VISIBLE_DEVICES="):
        GpuPool(empty, 1).check(1)
    none = visible_gpus({"PATH": str(tmp_path)}, nvidia_smi="nvidia-smi-not-here")
    with pytest.raises(GpuError, match=r"no CUDA_VISIBLE_DEVICES and no nvidia-smi"):
        GpuPool(none, 1).check(1)
    with pytest.raises(GpuError, match=r"whole number >= 1"):
        GpuPool(empty, 0)


def test_nvidia_smi_lines_are_read_when_no_variable_is_set(tmp_path):
    fake = tmp_path / "nvidia-smi"  # a real program on PATH printing what the driver's tool prints
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-aaaa)'\necho 'GPU 1: NVIDIA A100 (UUID: GPU-bbbb)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    v = visible_gpus({}, nvidia_smi=str(fake))
    assert v.ids == ("0", "1") and v.source == "nvidia-smi -L"


def test_each_worker_sees_only_its_share_in_the_variables_that_were_given():
    assert gpu_environment(["1"], {}) == {"CUDA_VISIBLE_DEVICES": "1"}
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "HIP_VISIBLE_DEVICES": "0,1"}
    assert gpu_environment(["0", "1"], env) == {"CUDA_VISIBLE_DEVICES": "0,1", "HIP_VISIBLE_DEVICES": "0,1"}
    assert visible_gpus({"ROCR_VISIBLE_DEVICES": "4,5"}).ids == ("4", "5")


# ---------------------------------------------------------------------------- through a sweep and the manager


