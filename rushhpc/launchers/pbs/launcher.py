"""PBS Pro: workers as one job array (``qsub -J``) per launch.

Polling asks ``qstat -x -t -w`` once for all of the network's arrays (parents
and subjobs, finished ones included), then ``qstat -x -f -F json`` only for the
jobs that just finished, to read their ``Exit_status``. Both answers are read
leniently: exit code 153 (an unknown id) still carries the known ones, and
PBS's JSON, which does not always escape quotes and backslashes, falls back
to a field-by-field reading.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from rushhpc import defaults
from rushhpc.core.states import JobState
from rushhpc.errors import RushWorkerError
from rushhpc.launchers.base import JobStatus, LaunchContext, LaunchRecord
from rushhpc.launchers.batch import BatchLauncher
from rushhpc.launchers.pbs.states import STATES, parse_exit_statuses, parse_table, short_id, status_of


class PbsLauncher(BatchLauncher):
    """Start workers with ``qsub -J``; poll with ``qstat``; kill with ``qsig``/``qdel``.

    Example:
        >>> rush_plan(worker_type="pbs", launcher_options={"queue": "workq", "time": "02:00:00"})
        >>> rush.start_workers(queue_loop, n_workers=50, fun=objective)   # one qsub
    """

    name = "pbs"
    scheduler = "pbs"
    template_package = "rushhpc.launchers.pbs"
    memory_style = "pbs"

    def __init__(self, context: LaunchContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.exit_statuses: dict[str, int | None] = {}

    def submit(self, script: Path, n: int) -> str:
        out = self.run(["qsub", str(script)])
        if out.returncode != 0:
            raise RushWorkerError(f"qsub refused the worker script {script}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def element_id(self, base_id: str, index: int, n: int) -> str:
        return base_id.replace("[]", f"[{index}]") if "[]" in base_id else base_id

    def stderr_path(self, base_id: str, index: int, n: int) -> str:
        return str(self.log_dir / f"{self.element_id(base_id, index, n)}.err")

    def poll(self, records: Sequence[LaunchRecord]) -> dict[str, JobStatus]:
        ids = {short_id(r.job_id): r for r in records if r.job_id}
        if not ids:
            return {}
        parents = sorted({re.sub(r"\[\d+\]", "[]", r.job_id or "") for r in ids.values()})
        # exit 153 (an unknown id) still lists the known ones
        out = self.run(["qstat", "-x", "-t", "-w", *parents], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
        letters = parse_table(out.stdout)
        ended = [sid for sid, st in letters.items() if sid in ids and STATES.get(st) == JobState.FINISHED
                 and sid not in self.exit_statuses]
        if ended:
            full = [ids[sid].job_id or "" for sid in ended]
            out = self.run(["qstat", "-x", "-f", "-F", "json", *full], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
            codes = parse_exit_statuses(out.stdout)
            for sid in ended:
                self.exit_statuses[sid] = codes.get(sid)
        result = {}
        for sid, rec in ids.items():
            letter = letters.get(sid)
            if letter is not None:
                result[rec.worker_id] = status_of(letter, self.exit_statuses.get(sid))
        return result

    def kill(self, records: Sequence[LaunchRecord]) -> None:
        ids = [r.job_id for r in records if r.job_id]
        if not ids:
            return
        # TERM first (the worker's trap), then qdel (TERM, KILL after kill_delay).
        # Exit 35 (finished) and 153 (unknown) answers count as success.
        self.run(["qsig", "-s", "TERM", *ids], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
        self.run(["qdel", *ids], timeout=defaults.SCHEDULER_QUERY_TIMEOUT)
