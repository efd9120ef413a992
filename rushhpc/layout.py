"""The Redis key layout of a network and the Lua scripts that change it.

Everything rushhpc stores lives here, in one place. Every key of network
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
{net}:meta                   hash    created_at, redis_run_id, version
{net}:queued                 list    queued task keys (LPUSH in, taken from the right)
{net}:pending:{wid}          list    a popped, not yet claimed task of worker wid
{net}:running                set     running task keys
{net}:finished               list    finished task keys, append-only (fetch cache)
{net}:failed                 list    failed task keys, append-only
{net}:all_tasks              list    every task key, in push order
{net}:task:{key}             hash    xs, xs_extra, ys, ys_extra, condition (JSON),
                                     state, worker_id, attempt, max_retries,
                                     created_at, started_at, finished_at
{net}:workers                set     every worker id ever registered
{net}:workers:{state}        set     worker ids by state (pending, running, terminated, ...)
{net}:worker:{wid}           hash    worker_id, pid, hostname, state, reason, ...
{net}:worker_tasks:{wid}     set     running task keys of worker wid
{net}:heartbeat:{wid}        string  exists while the worker's heartbeat is alive
{net}:kill:{wid}             list    kill requests the heartbeat process listens on
{net}:start:{start_id}       string  cloudpickled worker loop + arguments
{net}:launches               hash    launch records, by worker id (JSON)
{net}:launches:active        set     batch workers whose job's fate is not settled yet
{net}:log                    stream  log records of the workers (capped)
"""

from __future__ import annotations

import re

from .errors import RushConfigError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

TASK_STATES = ("queued", "running", "finished", "failed")


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
        self.queued = p + "queued"
        self.running = p + "running"
        self.finished = p + "finished"
        self.failed = p + "failed"
        self.all_tasks = p + "all_tasks"
        self.workers = p + "workers"
        self.launches = p + "launches"
        self.active_launches = p + "launches:active"
        self.log = p + "log"
        self.pattern = p + "*"

    def workers_in(self, state: str) -> str:
        return f"{self.prefix}workers:{state}"

    def pending(self, worker_id: str) -> str:
        return f"{self.prefix}pending:{worker_id}"

    def task(self, key: str) -> str:
        return f"{self.prefix}task:{key}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def worker_tasks(self, worker_id: str) -> str:
        return f"{self.prefix}worker_tasks:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.prefix}heartbeat:{worker_id}"

    def kill(self, worker_id: str) -> str:
        return f"{self.prefix}kill:{worker_id}"

    def start(self, start_id: str) -> str:
        return f"{self.prefix}start:{start_id}"


# --------------------------------------------------------------------------
# Lua. Shared helpers are prepended to every script. ARGV[1] is always the
# key prefix; per-task and per-worker keys are built from it (same hash slot).
# Timestamps come from the server clock (TIME): node clocks drift.
# --------------------------------------------------------------------------

_HELPERS = r"""
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function cond(msg)
  return cjson.encode({message = msg})
end
-- Move every task of a worker that stops out of its pending list and running
-- set. Pending tasks never started: back to the front of the queue. Running
-- tasks are requeued when `retry` and retries are left, else failed with msg.
local function release_tasks(wid, retry, msg, t)
  local pend = P .. 'pending:' .. wid
  local k = redis.call('RPOP', pend)
  while k do
    redis.call('RPUSH', P .. 'queued', k)
    k = redis.call('RPOP', pend)
  end
  local wt = P .. 'worker_tasks:' .. wid
  local failed = 0
  local requeued = 0
  for _, key in ipairs(redis.call('SMEMBERS', wt)) do
    local tk = P .. 'task:' .. key
    if redis.call('SREM', P .. 'running', key) == 1 then
      local v = redis.call('HMGET', tk, 'attempt', 'max_retries')
      local attempt = tonumber(v[1] or '0') or 0
      local maxr = tonumber(v[2] or '0') or 0
      if retry and attempt <= maxr then
        redis.call('HSET', tk, 'state', 'queued')
        redis.call('HDEL', tk, 'worker_id', 'started_at')
        redis.call('RPUSH', P .. 'queued', key)
        requeued = requeued + 1
      else
        redis.call('HSET', tk, 'state', 'failed', 'condition', cond(msg), 'finished_at', t)
        redis.call('RPUSH', P .. 'failed', key)
        failed = failed + 1
      end
    end
  end
  redis.call('DEL', wt)
  return {failed, requeued}
end
"""


def _lua(body: str) -> str:
    return _HELPERS + body


# KEYS: queued, all_tasks.  ARGV: prefix, max_retries, (key, xs, xs_extra)*
PUSH_TASKS = _lua(r"""
local mr = ARGV[2]
local t = now()
local n = 0
for i = 3, #ARGV, 3 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 0 then  -- idempotent: a retried call adds nothing
    redis.call('HSET', tk, 'state', 'queued', 'xs', ARGV[i + 1], 'attempt', '0',
               'max_retries', mr, 'created_at', t)
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    redis.call('LPUSH', KEYS[1], k)
    redis.call('RPUSH', KEYS[2], k)
    n = n + 1
  end
end
return n
""")

# KEYS: running, all_tasks, worker_tasks(wid), worker(wid)
# ARGV: prefix, wid, (key, xs, xs_extra)*.  Returns {worker state, terminate flag}.
PUSH_RUNNING_TASKS = _lua(r"""
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state = w[1] or 'unregistered'
if state ~= 'running' then return {state, w[2] or '0'} end
local t = now()
for i = 3, #ARGV, 3 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 0 then
    redis.call('HSET', tk, 'state', 'running', 'xs', ARGV[i + 1], 'worker_id', wid,
               'attempt', '1', 'max_retries', '0', 'created_at', t, 'started_at', t)
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    redis.call('SADD', KEYS[1], k)
    redis.call('SADD', KEYS[3], k)
    redis.call('RPUSH', KEYS[2], k)
  end
end
return {'running', w[2] or '0'}
""")

# Pop and claim in one step while the queue has tasks (no intermediate state to lose).
# KEYS: queued, running, worker_tasks(wid), worker(wid)
# ARGV: prefix, wid.  Returns {key or '', xs, xs_extra, attempt, worker state, terminate flag}.
POP_TASK = _lua(r"""
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state, term = w[1] or 'unregistered', w[2] or '0'
if state ~= 'running' or term == '1' then return {'', '', '', '', state, term} end
local k = redis.call('RPOP', KEYS[1])
while k do
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 1 then
    local attempt = redis.call('HINCRBY', tk, 'attempt', 1)
    redis.call('HSET', tk, 'state', 'running', 'worker_id', wid, 'started_at', now())
    redis.call('SADD', KEYS[2], k)
    redis.call('SADD', KEYS[3], k)
    local v = redis.call('HMGET', tk, 'xs', 'xs_extra')
    return {k, v[1], v[2] or '', tostring(attempt), state, term}
  end
  k = redis.call('RPOP', KEYS[1])  -- a key whose task was deleted (reset): skip it
end
return {'', '', '', '', state, term}
""")

# Second phase of a pop: the key sits in the worker's pending list (moved
# there by BLMOVE); make it running. A worker that is no longer running
# gives the key back to the queue.
# KEYS: pending(wid), running, worker_tasks(wid), worker(wid), queued
# ARGV: prefix, wid, key.  Returns {key, xs, xs_extra, attempt} or false.
CLAIM_TASK = _lua(r"""
local wid = ARGV[2]
local k = ARGV[3]
if redis.call('LREM', KEYS[1], 1, k) == 0 then return false end
local tk = P .. 'task:' .. k
if redis.call('EXISTS', tk) == 0 then return false end
if redis.call('HGET', KEYS[4], 'state') ~= 'running' then
  redis.call('RPUSH', KEYS[5], k)
  return false
end
local attempt = redis.call('HINCRBY', tk, 'attempt', 1)
redis.call('HSET', tk, 'state', 'running', 'worker_id', wid, 'started_at', now())
redis.call('SADD', KEYS[2], k)
redis.call('SADD', KEYS[3], k)
local v = redis.call('HMGET', tk, 'xs', 'xs_extra')
return {k, v[1], v[2] or '', tostring(attempt)}
""")

# First writer wins: a task becomes final only if it is still running under
# this worker and attempt (the fencing token). Anything else is discarded.
# KEYS: running, destination list (finished or failed), worker_tasks(wid), worker(wid)
# ARGV: prefix, wid, state, (key, attempt or '*', field1, value1, field2, value2)*
# Returns {discarded keys, worker state, terminate flag}.
FINISH_TASKS = _lua(r"""
local wid = ARGV[2]
local state = ARGV[3]
local t = now()
local discarded = {}
for i = 4, #ARGV, 6 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  local cur = redis.call('HMGET', tk, 'worker_id', 'attempt')
  if redis.call('SISMEMBER', KEYS[1], k) == 1 and cur[1] == wid
     and (ARGV[i + 1] == '*' or cur[2] == ARGV[i + 1]) then
    redis.call('SREM', KEYS[1], k)
    redis.call('SREM', KEYS[3], k)
    redis.call('HSET', tk, 'state', state, 'finished_at', t, ARGV[i + 2], ARGV[i + 3])
    if ARGV[i + 5] ~= '' then redis.call('HSET', tk, ARGV[i + 4], ARGV[i + 5]) end
    redis.call('RPUSH', KEYS[2], k)
  else
    table.insert(discarded, k)
  end
end
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
return {discarded, w[1] or 'unregistered', w[2] or '0'}
""")

# Tasks the manager records as already finished or failed.
# KEYS: destination list, all_tasks.  ARGV: prefix, state, (key, xs, xs_extra, f1, v1, f2, v2)*
PUSH_FINAL_TASKS = _lua(r"""
local state = ARGV[2]
local t = now()
for i = 3, #ARGV, 7 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 0 then
    redis.call('HSET', tk, 'state', state, 'xs', ARGV[i + 1], 'attempt', '0', 'max_retries', '0',
               'created_at', t, 'finished_at', t, ARGV[i + 3], ARGV[i + 4])
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    if ARGV[i + 6] ~= '' then redis.call('HSET', tk, ARGV[i + 5], ARGV[i + 6]) end
    redis.call('RPUSH', KEYS[1], k)
    redis.call('RPUSH', KEYS[2], k)
  end
end
return 1
""")

# KEYS: queued, failed.  ARGV: prefix, message.  Returns the number moved.
EMPTY_QUEUE = _lua(r"""
local t = now()
local c = cond(ARGV[2])
local n = 0
local k = redis.call('RPOP', KEYS[1])
while k do
  redis.call('HSET', P .. 'task:' .. k, 'state', 'failed', 'condition', c, 'finished_at', t)
  redis.call('RPUSH', KEYS[2], k)
  n = n + 1
  k = redis.call('RPOP', KEYS[1])
end
return n
""")

# KEYS: workers, workers:running, worker(wid), heartbeat(wid)
# ARGV: prefix, wid, heartbeat_expire (0 = no heartbeat), (field, value)*
REGISTER_WORKER = _lua(r"""
local wid = ARGV[2]
local s = redis.call('HGET', KEYS[3], 'state')
if s and s ~= 'pending' then return redis.error_reply('worker id ' .. wid .. ' is already registered (' .. s .. ')') end
local fields = {}
for i = 4, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[3], 'worker_id', wid, 'state', 'running', 'started_at', now(), unpack(fields))
redis.call('SADD', KEYS[1], wid)
redis.call('SADD', KEYS[2], wid)
redis.call('SREM', P .. 'workers:pending', wid)
local ex = tonumber(ARGV[3])
if ex > 0 then
  redis.call('HSET', KEYS[3], 'heartbeat_expire', ARGV[3])
  redis.call('SET', KEYS[4], '1', 'EX', ex)
end
return 'running'
""")

# A worker leaves `running` (or `pending`, a launched worker that never
# registered): terminated (its own choice or asked), failed (its loop raised),
# killed (manager), lost (heartbeat expired, process gone, job ended).
# Only a running or pending worker changes state: the first verdict stands.
# KEYS: workers:running or workers:pending.  ARGV: prefix, new_state, retry (1/0), (wid, reason, task_message)*
# Returns {wid, failed_tasks, requeued_tasks}* for the workers that changed.
STOP_WORKERS = _lua(r"""
local new = ARGV[2]
local retry = ARGV[3] == '1'
local t = now()
local out = {}
for i = 4, #ARGV, 3 do
  local wid = ARGV[i]
  if redis.call('SMOVE', KEYS[1], P .. 'workers:' .. new, wid) == 1 then
    redis.call('SADD', P .. 'workers', wid)
    redis.call('HSET', P .. 'worker:' .. wid, 'worker_id', wid, 'state', new, 'reason', ARGV[i + 1], 'stopped_at', t)
    redis.call('DEL', P .. 'heartbeat:' .. wid)
    local r = release_tasks(wid, retry, ARGV[i + 2], t)
    table.insert(out, {wid, r[1], r[2]})
  end
end
return out
""")

# Running workers that have a heartbeat whose key expired: lost, in one step.
# Workers of a batch job (field `managed`) are only reported: the scheduler's
# view decides for them (a suspended job is silent, not dead).
# KEYS: workers:running, launches:active.  ARGV: prefix, max_retries_apply (1/0)
# Returns {{wid, failed_tasks, requeued_tasks}*, {expired managed wid}*, number of active batch launches}.
DETECT_LOST = _lua(r"""
local retry = ARGV[2] == '1'
local t = now()
local out = {}
local managed = {}
for _, wid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local wk = P .. 'worker:' .. wid
  local v = redis.call('HMGET', wk, 'heartbeat_expire', 'managed')
  local expired = v[1] and redis.call('EXISTS', P .. 'heartbeat:' .. wid) == 0
  if expired and v[2] == '1' then
    table.insert(managed, wid)
  elseif expired then
    redis.call('SMOVE', KEYS[1], P .. 'workers:lost', wid)
    redis.call('HSET', wk, 'state', 'lost', 'reason', 'heartbeat_expired', 'stopped_at', t)
    local r = release_tasks(wid, retry, 'worker ' .. wid .. ' was lost (heartbeat expired)', t)
    table.insert(out, {wid, r[1], r[2]})
  end
end
return {out, managed, redis.call('SCARD', KEYS[2])}
""")

# The heartbeat process's beat: refresh only while the worker is registered
# and running, so reset() leaves no key behind. Returns the worker's state.
# KEYS: worker(wid), heartbeat(wid).  ARGV: prefix, expire
HEARTBEAT = _lua(r"""
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'running' then redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2])) end
return s or ''
""")

# Every worker's hash and whether its heartbeat key is alive, in one step.
# KEYS: workers, workers:pending.  ARGV: prefix.  Returns {hgetall..., heartbeat_alive}*
WORKER_INFO = _lua(r"""
local out = {}
for _, wid in ipairs(redis.call('SUNION', KEYS[1], KEYS[2])) do
  local h = redis.call('HGETALL', P .. 'worker:' .. wid)
  table.insert(h, 'heartbeat_alive')
  table.insert(h, tostring(redis.call('EXISTS', P .. 'heartbeat:' .. wid)))
  table.insert(out, h)
end
return out
""")

# Build one JSON array of task records server-side, so a client decodes
# thousands of tasks with a single parse. xs/ys/extras/condition are stored
# as JSON already; keys, worker ids and states are validated plain tokens.
_FETCH_HELPERS = r"""
local FIELDS = {'state', 'worker_id', 'xs', 'xs_extra', 'ys', 'ys_extra', 'condition',
                'created_at', 'started_at', 'finished_at', 'attempt'}
local function rec(k, want)
  local v = redis.call('HMGET', P .. 'task:' .. k, unpack(FIELDS))
  if not v[1] then return nil end
  if want and not want[v[1]] then return nil end
  local parts = {'{"keys":"', k, '","state":"', v[1], '"'}
  if v[2] then table.insert(parts, ',"worker_id":"' .. v[2] .. '"') end
  for j = 3, 7 do
    if v[j] then table.insert(parts, ',"' .. FIELDS[j] .. '":' .. v[j]) end
  end
  for j = 8, 11 do
    if v[j] then table.insert(parts, ',"' .. FIELDS[j] .. '":' .. v[j]) end
  end
  table.insert(parts, '}')
  return table.concat(parts)
end
local function collect(keys, want, acc)
  for _, k in ipairs(keys) do
    local r = rec(k, want)
    if r then table.insert(acc, r) end
  end
  return acc
end
local function queued_keys()
  -- queue order: oldest first; tasks in pending lists count as queued
  local ks = {}
  for _, wid in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
    for _, k in ipairs(redis.call('LRANGE', P .. 'pending:' .. wid, 0, -1)) do table.insert(ks, k) end
  end
  local q = redis.call('LRANGE', P .. 'queued', 0, -1)
  for i = #q, 1, -1 do table.insert(ks, q[i]) end
  return ks
end
local function keys_of(state)
  if state == 'queued' then return queued_keys() end
  if state == 'running' then return redis.call('SMEMBERS', P .. 'running') end
  if state == 'finished' then return redis.call('LRANGE', P .. 'finished', 0, -1) end
  if state == 'failed' then return redis.call('LRANGE', P .. 'failed', 0, -1) end
  return {}
end
"""

# ARGV: prefix, mode, ...
#   mode 'range': list key suffix, start, stop  -> records of LRANGE
#   mode 'keys': key*                           -> records of these keys
#   mode 'states': state*                       -> records of these states (one atomic read)
FETCH = _lua(_FETCH_HELPERS + r"""
local mode = ARGV[2]
local acc = {}
if mode == 'range' then
  collect(redis.call('LRANGE', P .. ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])), nil, acc)
elseif mode == 'keys' then
  local ks = {}
  for i = 3, #ARGV do table.insert(ks, ARGV[i]) end
  collect(ks, nil, acc)
elseif mode == 'states' then
  for i = 3, #ARGV do collect(keys_of(ARGV[i]), nil, acc) end
end
return '[' .. table.concat(acc, ',') .. ']'
""")

# ARGV: prefix, state*.  Returns {state, key*}* read in one atomic step.
KEYS_WITH_STATE = _lua(_FETCH_HELPERS + r"""
local out = {}
for i = 2, #ARGV do
  local ks = keys_of(ARGV[i])
  local row = {ARGV[i]}
  for _, k in ipairs(ks) do table.insert(row, k) end
  table.insert(out, row)
end
return out
""")

# ARGV: prefix.  Counts of every state in one step.
COUNTS = _lua(r"""
local pending = 0
for _, wid in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  pending = pending + redis.call('LLEN', P .. 'pending:' .. wid)
end
return {redis.call('LLEN', P .. 'queued') + pending, redis.call('SCARD', P .. 'running'),
        redis.call('LLEN', P .. 'finished'), redis.call('LLEN', P .. 'failed'),
        redis.call('LLEN', P .. 'all_tasks')}
""")

SCRIPTS = {
    "push_tasks": PUSH_TASKS,
    "push_running_tasks": PUSH_RUNNING_TASKS,
    "claim_task": CLAIM_TASK,
    "pop_task": POP_TASK,
    "finish_tasks": FINISH_TASKS,
    "push_final_tasks": PUSH_FINAL_TASKS,
    "empty_queue": EMPTY_QUEUE,
    "register_worker": REGISTER_WORKER,
    "stop_workers": STOP_WORKERS,
    "detect_lost": DETECT_LOST,
    "heartbeat": HEARTBEAT,
    "worker_info": WORKER_INFO,
    "fetch": FETCH,
    "keys_with_state": KEYS_WITH_STATE,
    "counts": COUNTS,
}


class Scripts:
    """The Lua scripts registered on one Redis client (EVALSHA, reloaded after a restart).

    Example:
        >>> s = Scripts(redis.Redis())
        >>> s.counts(keys=[], args=["{net}:"])
    """

    def __init__(self, client):
        for name, source in SCRIPTS.items():
            setattr(self, name, client.register_script(source))
