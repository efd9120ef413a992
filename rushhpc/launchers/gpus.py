"""A GPU per worker: which devices a machine's workers may use, and each worker's disjoint share.

The devices come from ``CUDA_VISIBLE_DEVICES`` when it is set (a SLURM or PBS allocation sets it to
the GPUs it granted), else ``ROCR_VISIBLE_DEVICES`` / ``HIP_VISIBLE_DEVICES`` (AMD), else the
lines of ``nvidia-smi -L``. Each worker gets ``gpus_per_worker`` of them, disjoint from every other
live worker's, in ``CUDA_VISIBLE_DEVICES`` (and in the AMD variables that were given). The ids are
the granted ones as written (``2,3`` or ``GPU-<uuid>``): CUDA reads the variable afresh in each
process, against the physical devices, so a subset of the parent's list is right in the child.

Nothing here starts a process but ``nvidia-smi``; the local launcher asks `GpuPool` for a worker's
share when it starts one and records it, so a replacement takes the GPUs its predecessor freed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from rushhpc import defaults

__all__ = ["GpuError", "GpuPool", "visible_gpus", "gpu_environment", "DEVICE_VARIABLES"]

# The variables that restrict which GPUs a process sees, in the order they are read.
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


class GpuError(ValueError):
    """GPUs asked for that this machine cannot give; the message says what is visible and what to change."""


@dataclass(frozen=True)
class Visible:
    """The GPUs a machine's workers may use, and where that list came from."""

    ids: tuple[str, ...]
    source: str  # "CUDA_VISIBLE_DEVICES=0,1", "nvidia-smi -L", or "nothing" when none was found


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip() and v.strip() != "NoDevFiles")


def visible_gpus(env: Mapping[str, str] | None = None, nvidia_smi: str | None = "nvidia-smi") -> Visible:
    """The GPUs visible to workers started from here.

    Example:
        >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}).ids
        ('0', '1', '2', '3')
    """
    env = os.environ if env is None else env
    for name in DEVICE_VARIABLES:
        if name in env:
            ids = _split(env[name])
            return Visible(ids, f"{name}={env[name]}")
    binary = shutil.which(nvidia_smi) if nvidia_smi else None
    if binary is None:
        return Visible((), "nothing (no CUDA_VISIBLE_DEVICES and no nvidia-smi on PATH)")
    try:
        out = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=defaults.NVIDIA_SMI_TIMEOUT).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return Visible((), f"nothing (nvidia-smi -L failed: {e})")
    ids = tuple(m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.M))
    return Visible(ids, "nvidia-smi -L")


def gpu_environment(ids: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that give a worker exactly ``ids``: CUDA's always, AMD's where the parent had them.

    Example:
        >>> gpu_environment(["2", "3"], {"ROCR_VISIBLE_DEVICES": "0,1,2,3"})
        {'CUDA_VISIBLE_DEVICES': '2,3', 'ROCR_VISIBLE_DEVICES': '2,3'}
    """
    env = os.environ if env is None else env
    value = ",".join(ids)
    out = {"CUDA_VISIBLE_DEVICES": value}
    for name in DEVICE_VARIABLES[1:]:
        if name in env:
            out[name] = value
    return out


class GpuPool:
    """Disjoint shares of the visible GPUs for the workers of one machine.

    ``held`` are the shares of workers still alive (from their launch records), so a new pool in a
    new manager, and a replacement worker, take only what is free.

    Example:
        >>> pool = GpuPool(Visible(("0", "1", "2", "3"), "CUDA_VISIBLE_DEVICES=0,1,2,3"), per_worker=2)
        >>> pool.check(2); pool.take("w-1"), pool.take("w-2")
        (['0', '1'], ['2', '3'])
        >>> pool.release("w-1"); pool.take("w-3")
        ['0', '1']
    """

    def __init__(self, visible: Visible, per_worker: int, held: Mapping[str, Iterable[str]] | None = None):
        if isinstance(per_worker, bool) or not isinstance(per_worker, int) or per_worker < 1:
            raise GpuError(f"gpus_per_worker must be a whole number >= 1, got {per_worker!r}")
        self.visible = visible
        self.per_worker = per_worker
        self.held: dict[str, list[str]] = {w: list(ids) for w, ids in (held or {}).items()}

    def free(self) -> list[str]:
        """The visible GPUs no live worker holds, in their visible order."""
        taken = {g for ids in self.held.values() for g in ids}
        return [g for g in self.visible.ids if g not in taken]

    def check(self, n_workers: int) -> None:
        """Refuse, before anything starts, ``n_workers`` more workers that the free GPUs cannot serve."""
        need, free = n_workers * self.per_worker, self.free()
        if not self.visible.ids:
            raise GpuError(f"gpus_per_worker is {self.per_worker} but no GPU is visible here: {self.visible.source}; "
                           "run where GPUs are (a GPU node or allocation), or remove gpus_per_worker")
        if need > len(free):
            busy = f", {len(self.visible.ids) - len(free)} held by running workers" if len(free) < len(self.visible.ids) else ""
            raise GpuError(f"{n_workers} workers x gpus_per_worker {self.per_worker} need {need} GPUs, but "
                           f"{len(free)} are free ({len(self.visible.ids)} visible from {self.visible.source}{busy}); "
                           f"start at most {len(free) // self.per_worker} workers, or lower gpus_per_worker")

    def take(self, worker_id: str) -> list[str]:
        """The next free share, now held by ``worker_id``."""
        self.check(1)
        share = self.free()[: self.per_worker]
        self.held[worker_id] = share
        return share

    def release(self, worker_id: str) -> None:
        """``worker_id`` ended: its GPUs are free for a replacement."""
        self.held.pop(worker_id, None)
