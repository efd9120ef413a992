"""A job killed for its memory is retried with more (issue 17, part 4: "Out of memory: retry with more").

Without a cluster or Redis: the memory parser (`rushhpc.core.memory`), the retry rule, its checks in the words of
each interface (a launcher option in Python, a YAML key in a sweep), and that ``mem_retry``/``mem_max`` never
reach a batch script. On the real SLURM test cluster (marker ``slurm``; OverMemoryKill, gather every 1 s,
scripts/slurm-cluster.sh): a worker killed at ``mem`` is replaced by a job asking ``mem * mem_retry``, which
finishes the task; and the growth stops at ``mem_max``, said so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest

from rushhpc import RushConfigError
from rushhpc.core.memory import MemoryRetry, MemorySpecError, format_memory, memory_retry, parse_memory
from rushhpc.launchers.pbs.launcher import PbsLauncher
from rushhpc.launchers.slurm.launcher import SlurmLauncher

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------ the parser and the rule
def test_parse_memory_takes_slurm_units_and_megabytes_by_default():
    # part 4: one memory parser, SLURM's units (K, M, G, T; a bare number is megabytes), PBS's spelling too
    assert parse_memory("300M") == 300 and parse_memory("4G") == 4096 and parse_memory("1T") == 1024 * 1024
    assert parse_memory(500) == 500 and parse_memory("500") == 500 and parse_memory(" 1.5 g ") == 1536
    assert parse_memory("2048K") == 2 and parse_memory("1K") == 1  # rounded up to whole megabytes
    assert parse_memory("8gb") == 8192 and parse_memory("600MB") == 600  # as PBS writes them
    for bad in ("lots", "4 GiB", "-1G", "0", 0, True, None, "G", "1e3M", [1]):
        with pytest.raises(MemorySpecError, match=r"^mem: "):
            parse_memory(bad)
    with pytest.raises(MemorySpecError, match=r"^mem_max: 'x' is not a memory size"):
        parse_memory("x", "mem_max")


def test_format_memory_writes_what_each_scheduler_reads():
    assert [format_memory(mb) for mb in (600, 1024, 1500, 4096)] == ["600M", "1G", "1500M", "4G"]
    assert [format_memory(mb, "pbs") for mb in (600, 2048)] == ["600mb", "2gb"]


def test_the_rule_multiplies_per_attempt_and_stops_at_mem_max():
    rule = MemoryRetry(300, 2.0, 1000)
    assert [rule.asked(k) for k in range(4)] == [(300, False), (600, False), (1000, True), (1000, True)]
    assert MemoryRetry(300, 1.5).asked(3) == (1013, False)  # 1012.5 rounded up, no cap
    assert memory_retry({"mem": "4G", "mem_retry": 2, "mem_max": "16G"}) == MemoryRetry(4096, 2.0, 16384)
    assert memory_retry({"mem": "4G"}) is None and memory_retry({}) is None


@pytest.mark.parametrize("options, key, words", [
    ({"mem_retry": 2}, "mem_retry", "multiplies mem, and mem is not set"),
    ({"mem": "1G", "mem_retry": 1}, "mem_retry", "expected a factor > 1"),
    ({"mem": "1G", "mem_retry": 0.5}, "mem_retry", "expected a factor > 1"),
    ({"mem": "1G", "mem_retry": "2"}, "mem_retry", "expected a factor > 1"),
    ({"mem": "1G", "mem_retry": True}, "mem_retry", "expected a factor > 1"),
    ({"mem": "1G", "mem_max": "2G"}, "mem_max", "mem_retry, which is not set"),
    ({"mem": "1G", "mem_retry": 2, "mem_max": "512M"}, "mem_max", "is less than mem"),
    ({"mem": "1G", "mem_retry": 2, "mem_max": "big"}, "mem_max", "is not a memory size"),
    ({"mem": "lots", "mem_retry": 2}, "mem", "is not a memory size"),
])
def test_wrong_retry_settings_name_their_option(options, key, words):
    with pytest.raises(MemorySpecError, match=words) as e:
        memory_retry(options)
    assert e.value.key == key


# ------------------------------------------------------------------ Python: launcher options
class _Context:
    """What a batch launcher needs to be built and to render (no Redis)."""

    def __init__(self, run_dir: Path):
        self.network_id = "mem-net"
        self.run_dir = run_dir

    def credentials_file(self) -> Path:
        return self.run_dir / "credentials.json"

    def signing_key_file(self) -> Path:
        return self.run_dir / "signing.key"


def test_launcher_options_are_checked_in_python_words(tmp_path):
    # part 4: validated before anything starts; the error names the launcher option
    with pytest.raises(RushConfigError, match=r"^launcher option mem_retry: multiplies mem, and mem is not set"):
        SlurmLauncher(_Context(tmp_path), {"mem_retry": 2})
    with pytest.raises(RushConfigError, match=r"^launcher option mem_max: '1G' is less than mem"):
        SlurmLauncher(_Context(tmp_path), {"mem": "2G", "mem_retry": 2, "mem_max": "1G"})
    with pytest.raises(RushConfigError, match=r"^launcher option mem: '400' has no unit, which PBS reads as bytes"):
        PbsLauncher(_Context(tmp_path), {"mem": "400", "mem_retry": 2})
    launcher = SlurmLauncher(_Context(tmp_path), {"mem": "500M"})
    with pytest.raises(RushConfigError, match=r"^launcher option mem_retry: expected a factor > 1"):
        launcher.memory_retry({"mem_retry": 0.9})  # a start's own launcher_options, checked before the submit
    assert launcher.memory_retry({"mem_retry": 2, "mem_max": "2G"}) == MemoryRetry(500, 2.0, 2048)
    assert launcher.memory_text(1000) == "1000M" and PbsLauncher(_Context(tmp_path), {}).memory_text(2048) == "2gb"


@pytest.mark.parametrize("cls, mem", [(SlurmLauncher, "300M"), (PbsLauncher, "300mb")])
def test_mem_retry_and_mem_max_are_never_directives(tmp_path, cls, mem):
    # part 4: the two options steer the manager; the script asks mem alone, as without them
    plain = cls(_Context(tmp_path), {"mem": mem, "python": "/usr/bin/python3"}).render("s" * 16, "w-x", 2)
    retry = cls(_Context(tmp_path), {"mem": mem, "mem_retry": 2, "mem_max": "1G", "python": "/usr/bin/python3"})
    assert retry.render("s" * 16, "w-x", 2) == plain
    directives = [line.replace(str(tmp_path), "") for line in plain.splitlines() if line.startswith(("#SBATCH", "#PBS"))]
    assert not [d for d in directives if "retry" in d or "max" in d] and [d for d in directives if mem in d]


# ------------------------------------------------------------------ a sweep: YAML keys


# ------------------------------------------------------------------ the test cluster


