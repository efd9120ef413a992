"""The states of tasks, workers, jobs and sweeps, the reasons a worker stops and the causes
a task is given back, as string enums.

They are `str` subclasses that hash like their value: what Redis stores and what tables
show is the plain value (``TaskState.FINISHED == "finished"``), a value read from Redis
finds a member in a set or a dict (``"lost" in {WorkerState.LOST}``), and ``str()`` or an
f-string gives the value. The Lua scripts (``store/lua/``) keep their strings;
``tests/unit/test_states.py`` checks each of them against these enums.

Example:
    >>> TaskState.FINISHED == "finished", "lost" in FINAL_WORKER_STATES
    (True, True)
    >>> f"{LostReason.PREEMPTED}", LostReason("timeout") in UNCOUNTED_REASONS
    ('preempted', False)
"""

from __future__ import annotations

from enum import Enum


class _Value(str, Enum):
    """A `str` enum whose members hash, print and format as their value.

    Enum hashes a member by its name, which would make ``"lost" in {WorkerState.LOST}``
    False; hashing by the value keeps sets and dicts of members usable with plain strings.
    """

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The plain values, in declaration order (CLI ``choices=``, error messages, JSON)."""
        return tuple(str(m.value) for m in cls)


class TaskState(_Value):
    """Where a task is. Every task is in exactly one of these."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


# A task in one of these has its result (or its error) and will not change again.
TERMINAL_TASK_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED})


class WorkerState(_Value):
    """A worker's own state in Redis (``{net}:workers:{state}`` sets and the ``state`` field).

    ``pending`` is a launched batch worker that has not registered yet. The final states
    are terminated (its own choice or asked), failed (its loop raised), killed (by a
    manager) and lost (heartbeat expired, process gone, job ended): the first verdict stands.
    The Lua scripts also read ``unregistered`` for a worker with no hash at all: that is
    not a state anything stores (`UNREGISTERED`).
    """

    PENDING = "pending"
    RUNNING = "running"
    TERMINATED = "terminated"
    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self in FINAL_WORKER_STATES


FINAL_WORKER_STATES = frozenset({WorkerState.TERMINATED, WorkerState.FAILED, WorkerState.KILLED, WorkerState.LOST})
# What pop_task/push_running_tasks reply for a worker id with no hash (never registered, or deleted).
UNREGISTERED = "unregistered"


class Release(_Value):
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

    @classmethod
    def of(cls, retry: bool | str) -> Release:
        """``True`` -> RETRY, ``False`` -> FAIL, a member or its value -> itself."""
        if isinstance(retry, bool):
            return cls.RETRY if retry else cls.FAIL
        return cls(retry)

    @property
    def lua(self) -> str:
        return {"retry": "1", "fail": "0"}.get(self.value, self.value)


class LostReason(_Value):
    """Why a worker stopped (the ``reason`` field of its hash) or how its job ended
    (`JobStatus.reason`, a launcher's verdict).

    A worker that failed stores its error instead, one that chose to stop may store a
    sentence (a walltime margin): those are free text, not members.
    """

    # rushhpc's own verdicts on a worker
    HEARTBEAT_EXPIRED = "heartbeat_expired"  # detect_lost.lua: its heartbeat key expired
    SIGTERM = "sigterm"  # a batch worker that got SIGTERM: the scheduler's reason replaces it
    PROCESS_DIED = "process_died"  # a local/ssh process ended without a verdict of its own
    VANISHED = "vanished"  # the scheduler no longer knows its job
    FAILED_TO_START = "failed_to_start"  # its job ended before it registered
    KILLED = "killed"  # a manager killed it (Rush.stop_workers(type="kill"))
    TERMINATED = "terminated"  # it was asked to terminate
    LOOP_RETURNED = "loop returned"  # its worker loop returned
    # the scheduler's verdicts on a job (launchers: slurm STATE_MAP, pbs exit_reason, srun)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"


# Scheduler reasons that are not a task's fault: its attempt is not counted.
UNCOUNTED_REASONS = frozenset({LostReason.PREEMPTED, LostReason.NODE_FAIL})
# rushhpc's own guesses, which the scheduler's reason replaces when it knows better.
VAGUE_REASONS = frozenset({LostReason.HEARTBEAT_EXPIRED, LostReason.SIGTERM, LostReason.PROCESS_DIED})


class CancelCause(_Value):
    """Why a task was failed without being evaluated: the point is to be done again.

    Stored beside the human message, in the task's `CANCEL_FIELD` field (and column), so a
    reader (the sweep engine) tells a cancelled task from a failed evaluation by this value,
    never by the wording of the message.
    """

    REMOVED = "removed_from_queue"  # Rush.empty_queue: "Removed from queue"
    WORKER_KILLED = "worker_killed"  # Rush.stop_workers(type="kill"): "worker was killed"
    # a worker that received SIGTERM (scancel, a time limit, preemption) and had no retry left for its task:
    # the task was stopped, not evaluated ("worker ... received SIGTERM")
    WORKER_SIGTERM = "worker_sigterm"


# The task hash field (and fetched column) that holds a `CancelCause`; absent when none.
CANCEL_FIELD = "cancel"


class JobState(_Value):
    """A launcher's view of a worker's job, whatever the scheduler (SLURM, PBS, a process)."""

    PENDING = "pending"
    HELD = "held"
    STARTING = "starting"
    RUNNING = "running"
    SUSPENDED = "suspended"
    FINISHING = "finishing"
    FINISHED = "finished"


# A job in one of these may still run a worker (or bring one back).
ALIVE_JOB_STATES = frozenset({JobState.RUNNING, JobState.PENDING, JobState.HELD, JobState.STARTING, JobState.SUSPENDED})


class SweepStatus(_Value):
    """A sweep run's status (``status.json``, `SweepResult.status`)."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class ServerState(_Value):
    """A `rushhpc redis` server's state (``rushhpc redis status``, server/service.py)."""

    ABSENT = "absent"
    RUNNING = "running"
    STOPPED = "stopped"
    NOT_ANSWERING = "not answering"


TASK_STATES: tuple[str, ...] = TaskState.values()
WORKER_STATES: tuple[str, ...] = WorkerState.values()
