"""The states of tasks, workers and jobs, as string enums.

They are `str` subclasses: what Redis stores and what tables show is the plain value
(``TaskState.FINISHED == "finished"``), so comparing a value read from Redis with a
member needs no conversion.
"""

from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    """Where a task is. Every task is in exactly one of these."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class WorkerState(str, Enum):
    """A worker's own state in Redis (``{net}:workers:{state}`` sets and the ``state`` field).

    ``pending`` is a launched batch worker that has not registered yet. The final states
    are terminated (its own choice or asked), failed (its loop raised), killed (by a
    manager) and lost (heartbeat expired, process gone, job ended): the first verdict stands.
    """

    PENDING = "pending"
    RUNNING = "running"
    TERMINATED = "terminated"
    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self.value in FINAL_WORKER_STATES


# Plain strings on purpose: a str-Enum member hashes by its name, so a set of members would
# not find the value read from Redis ("lost" in {WorkerState.LOST} is False).
FINAL_WORKER_STATES = frozenset({"terminated", "failed", "killed", "lost"})


class Release(str, Enum):
    """What happens to the running tasks of a worker that stops (``helpers.lua`` release_tasks).

    RETRY requeues a task while retries are left (the attempt counts), else fails it; FAIL
    fails it; FREE requeues it without counting the attempt (preemption, node failure: not
    the task's fault); HOLD is FREE until the scheduler's verdict on the job decides
    (a batch worker that gets SIGTERM cannot tell a preemption from a cancel or a time limit).
    """

    RETRY = "retry"
    FAIL = "fail"
    FREE = "free"
    HOLD = "hold"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, retry: bool | str) -> Release:
        """``True`` -> RETRY, ``False`` -> FAIL, a member or its value -> itself."""
        if isinstance(retry, bool):
            return cls.RETRY if retry else cls.FAIL
        return cls(retry)

    @property
    def lua(self) -> str:
        return {"retry": "1", "fail": "0"}.get(self.value, self.value)


# Scheduler reasons that are not a task's fault: its attempt is not counted.
UNCOUNTED_REASONS = frozenset({"preempted", "node_fail"})


class JobState(str, Enum):
    """A launcher's view of a worker's job, whatever the scheduler (SLURM, PBS, a process)."""

    PENDING = "pending"
    HELD = "held"
    STARTING = "starting"
    RUNNING = "running"
    SUSPENDED = "suspended"
    FINISHING = "finishing"
    FINISHED = "finished"

    def __str__(self) -> str:
        return self.value


TASK_STATES: tuple[str, ...] = tuple(s.value for s in TaskState)
WORKER_STATES: tuple[str, ...] = tuple(s.value for s in WorkerState)
