"""The Redis key layout of a network: every key name rushhpc uses is made here.

The scripts that change these keys are in ``rushhpc/lua`` (see `rushhpc.store.protocol`). Every key of network
``net`` starts with ``{net}:`` so that a whole network hashes to one Redis
Cluster slot (multi-key Lua stays legal) and ``reset()`` finds every key with
one pattern. Network and worker ids are validated (`validate_id`) so that an
id can never widen that pattern or break the JSON the fetch script builds.

Task state is kept twice, on purpose and always together: as membership of a
collection (queue, pending list, running set, finished/failed lists) and as
the ``state`` field of the task hash. Both are changed only inside one Lua
script per transition, so they cannot disagree.

Key                          type    holds
---------------------------  ------  ---------------------------------------------
{net}:meta                   hash    created_at, redis_run_id, version, schema
{net}:queued                 list    queued task keys (LPUSH in, taken from the right)
{net}:pending:{wid}          list    a popped, not yet claimed task of worker wid
{net}:running                set     running task keys
{net}:finished               list    finished task keys, append-only (fetch cache)
{net}:failed                 list    failed task keys, append-only
{net}:all_tasks              list    every task key, in push order
{net}:task:{key}             hash    xs, xs_extra, ys, ys_extra, condition (JSON),
                                     state, worker_id, attempt, max_retries, free
                                     (attempts not counted as retries), origin (worker:
                                     created by its worker, never requeued),
                                     created_at, started_at, finished_at
{net}:workers                set     every worker id ever registered
{net}:workers:{state}        set     worker ids by state (pending, running, terminated, ...)
{net}:worker:{wid}           hash    worker_id, pid, hostname, state, reason, ...
{net}:worker_tasks:{wid}     set     running task keys of worker wid
{net}:released:{wid}         set     tasks a SIGTERMed batch worker released uncounted, until the
                                     scheduler's verdict (settle_released.lua)
{net}:heartbeat:{wid}        string  exists while the worker's heartbeat is alive
{net}:kill:{wid}             list    kill requests the heartbeat process listens on
{net}:start:{start_id}       string  cloudpickled worker loop + arguments
{net}:launches               hash    launch records, by worker id (JSON)
{net}:launches:active        set     batch workers whose job's fate is not settled yet
{net}:log                    stream  log records of the workers (capped)
{net}:adapt                  string  the adaptive scaler's status (JSON): active/paused, reason, last decision
{net}:sweep                  hash    what a sweep network is (`rushhpc.core.records.SweepInfo`): name, strategy,
                                     metric, direction, evaluations, walltime, target, seed, config,
                                     output, started_at; written once when ``rushhpc sweep`` starts
"""

from __future__ import annotations

import re

from rushhpc.core.states import TASK_STATES, TaskState
from rushhpc.errors import RushConfigError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")



def validate_id(value: str, what: str = "network id") -> str:
    """Return ``value`` if it is a safe id (letters, digits, ``. _ -``), else raise.

    Example:
        >>> validate_id("sweep-01")
        'sweep-01'
    """
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise RushConfigError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes part of Redis key names)"
        )
    return value


class Keys:
    """Key names of one network. ``Keys("net").task("abc") == "{net}:task:abc"``."""

    def __init__(self, network_id: str):
        self.network_id = validate_id(network_id)
        self.prefix = "{" + network_id + "}:"
        p = self.prefix
        self.meta = p + "meta"
        self.queued = p + TaskState.QUEUED
        self.running = p + TaskState.RUNNING
        self.finished = p + TaskState.FINISHED
        self.failed = p + TaskState.FAILED
        self.all_tasks = p + "all_tasks"
        self.workers = p + "workers"
        self.launches = p + "launches"
        self.active_launches = p + "launches:active"
        self.log = p + "log"
        self.adapt = p + "adapt"
        self.sweep = p + "sweep"
        self.asha_promoted = p + "asha:promoted"  # set of "<config>:<rung>" promoted from that rung
        self.asha_configs = p + "asha:configs"  # hash config id -> its xs JSON
        self.asha_promotions = p + "asha:promotions"  # hash "<config>:<rung>" -> the task key of that promotion
        self.asha_lost = p + "asha:lost"  # hash "<config>:<rung>" -> times promoted again after a lost task
        self.asha_spent = p + "asha:spent"  # the fidelity claimed so far (budget.fidelity)
        self.asha_refused = p + "asha:refused"  # set when a claim was refused for budget.fidelity
        self.pattern = p + "*"

    def workers_in(self, state: str) -> str:
        return f"{self.prefix}workers:{state}"

    def pending(self, worker_id: str) -> str:
        return f"{self.prefix}pending:{worker_id}"

    def asha_rung(self, rung: int, bracket: int | None = None) -> str:
        """ASHA: the sorted set of a rung's finished results (config id, score: lower is better); Hyperband: of
        a bracket's rung."""
        if bracket is None:
            return f"{self.prefix}asha:rung:{int(rung)}"
        return f"{self.prefix}asha:bracket:{int(bracket)}:rung:{int(rung)}"

    def task(self, key: str) -> str:
        return f"{self.prefix}task:{key}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def worker_tasks(self, worker_id: str) -> str:
        return f"{self.prefix}worker_tasks:{worker_id}"

    def released(self, worker_id: str) -> str:
        return f"{self.prefix}released:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.prefix}heartbeat:{worker_id}"

    def kill(self, worker_id: str) -> str:
        return f"{self.prefix}kill:{worker_id}"

    def start(self, start_id: str) -> str:
        return f"{self.prefix}start:{start_id}"

    def task_list(self, state: str) -> str:
        """The append-only list of finished or failed task keys."""
        return self.finished if state == TaskState.FINISHED else self.failed


__all__ = ["ID_PATTERN", "TASK_STATES", "Keys", "validate_id"]
