"""The one memory-size parser, and the rule of retrying a job killed for its memory with more.

Sizes (``mem``, ``mem_max``) are written as SLURM writes them: a number of megabytes (``500``), or a number
with a unit ``K``, ``M``, ``G`` or ``T`` (``1500M``, ``4G``, ``1.5G``), case-insensitive, a trailing ``B``
allowed (``4gb``, as PBS writes it). A megabyte is 1024 KB, a gigabyte 1024 MB, as SLURM counts them.

``mem_retry`` (a factor > 1) makes the replacement of a worker whose job ended ``out_of_memory`` ask for
``mem * mem_retry**k`` after the k-th out-of-memory end in that worker's lineage, never more than ``mem_max``
(`MemoryRetry`). The manager applies it when it replaces lost workers (`rushhpc.manager.rush.Rush.replace_workers`).
Imports no other rushhpc module.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

__all__ = ["MemorySpecError", "MemoryRetry", "parse_memory", "format_memory", "memory_retry"]

_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([kmgt]?)b?$")
_FACTOR = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_FORMS = "megabytes (500) or a number with a unit K, M, G or T (1500M, 4G)"


class MemorySpecError(ValueError):
    """A memory size or retry setting that is wrong; ``key`` names the option (mem, mem_retry, mem_max),
    so that each interface can say it in its own words (a YAML key, a launcher option)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def parse_memory(value: Any, key: str = "mem") -> int:
    """Whole megabytes of a memory size (rounded up); ``key`` names the option in the error.

    Example:
        >>> parse_memory("4G"), parse_memory("1500M"), parse_memory(500), parse_memory("1.5g"), parse_memory("8gb")
        (4096, 1500, 500, 1536, 8192)
        >>> parse_memory("lots")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rushhpc.core.memory.MemorySpecError: mem: 'lots' is not a memory size: expected megabytes (500) or ...
    """
    if isinstance(value, bool):
        raise MemorySpecError(key, f"{value!r} is not a memory size: expected {_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise MemorySpecError(key, f"{value!r}: a memory size must be more than 0 megabytes")
        return math.ceil(value)
    if not isinstance(value, str):
        raise MemorySpecError(key, f"{value!r} is not a memory size: expected {_FORMS}")
    m = _SIZE.match("".join(value.split()).lower())
    if not m:
        raise MemorySpecError(key, f"{value!r} is not a memory size: expected {_FORMS}")
    mb = float(m.group(1)) * _FACTOR[m.group(2)]
    if mb <= 0:
        raise MemorySpecError(key, f"{value!r}: a memory size must be more than 0 megabytes")
    return math.ceil(mb)


def format_memory(mb: int, style: str = "slurm") -> str:
    """A size in megabytes as a scheduler's directive takes it: ``slurm`` (``600M``, ``2G``) or ``pbs``
    (``600mb``, ``2gb``, since PBS reads a bare number as bytes).

    Example:
        >>> format_memory(600), format_memory(2048), format_memory(2048, "pbs"), format_memory(1500, "pbs")
        ('600M', '2G', '2gb', '1500mb')
    """
    number, unit = (mb // 1024, "G") if mb % 1024 == 0 else (mb, "M")
    return f"{number}{unit.lower() + 'b' if style == 'pbs' else unit}"


@dataclasses.dataclass(frozen=True)
class MemoryRetry:
    """How a worker lost ``out_of_memory`` is replaced: its lineage's first ``mem`` (MB), the ``factor``
    per out-of-memory end, the cap ``max_mb`` (None: none).

    Example:
        >>> MemoryRetry(300, 2.0, 1000).asked(1), MemoryRetry(300, 2.0, 1000).asked(2)
        ((600, False), (1000, True))
    """

    mem: int
    factor: float
    max_mb: int | None = None

    def asked(self, attempt: int) -> tuple[int, bool]:
        """Megabytes after ``attempt`` out-of-memory ends (``mem * factor**attempt``, rounded up), and
        whether ``mem_max`` capped them."""
        mb = math.ceil(self.mem * self.factor ** attempt - 1e-9)
        if self.max_mb is not None and mb >= self.max_mb:
            return self.max_mb, True
        return mb, False


def memory_retry(options: Mapping[str, Any], scheduler: str = "slurm") -> MemoryRetry | None:
    """The retry rule of these launcher options (``mem``, ``mem_retry``, ``mem_max``), checked; None
    without ``mem_retry``. Raises `MemorySpecError` naming the option: ``mem_retry`` must be a number > 1
    and needs ``mem``; ``mem_max`` needs ``mem_retry`` and must be at least ``mem``; for ``scheduler``
    ``pbs``, ``mem`` needs its unit (PBS reads a bare number as bytes, this module as megabytes).

    Example:
        >>> memory_retry({"mem": "300M", "mem_retry": 2, "mem_max": "1G"})
        MemoryRetry(mem=300, factor=2.0, max_mb=1024)
        >>> memory_retry({"mem_retry": 2})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rushhpc.core.memory.MemorySpecError: mem_retry: multiplies mem, and mem is not set: ...
    """
    factor, cap, mem = options.get("mem_retry"), options.get("mem_max"), options.get("mem")
    if factor is None:
        if cap is not None:
            raise MemorySpecError("mem_max", "caps the growth of mem_retry, which is not set: set mem_retry "
                                  "(e.g. 2) or remove mem_max")
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise MemorySpecError("mem_retry", f"expected a factor > 1 (e.g. 2: each retry asks twice the memory), "
                              f"got {factor!r}")
    if mem in (None, ""):
        raise MemorySpecError("mem_retry", "multiplies mem, and mem is not set: set mem (e.g. 4G), the "
                              "memory of the first job")
    if scheduler == "pbs" and re.fullmatch(r"\d+(\.\d*)?", "".join(str(mem).split())):
        raise MemorySpecError("mem", f"{mem!r} has no unit, which PBS reads as bytes: write the unit (e.g. 4gb) "
                              "when mem_retry is set")
    mb = parse_memory(mem, "mem")
    max_mb = parse_memory(cap, "mem_max") if cap is not None else None
    if max_mb is not None and max_mb < mb:
        raise MemorySpecError("mem_max", f"{cap!r} is less than mem ({mem!r}): mem_max caps the memory a retry asks")
    return MemoryRetry(mb, float(factor), max_mb)
