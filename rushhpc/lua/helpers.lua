-- Shared by every script (prepended). Every key a script touches is declared in KEYS,
-- except the per-item keys whose names are data (a task's hash, a worker's hash, heartbeat,
-- pending list, task set or released set, for ids read from a list, a set or the arguments): those are
-- built here from P, the "{net}:" hash tag of KEYS[1], so they hash to KEYS[1]'s Redis
-- Cluster slot by construction. ARGV[1] repeats the prefix as a check (a caller that mixes
-- networks gets an error, not a write to another one). Fixed keys (queued, running, failed,
-- workers, workers:<state>, ...) are never built: they come in KEYS. Timestamps come from the
-- server clock (TIME): node clocks drift.
local P = string.match(KEYS[1], '^{[^}]+}:')
if not P or ARGV[1] ~= P then
  return redis.error_reply('KEYS KEYS[1] ' .. tostring(KEYS[1]) .. ' is not a key of network ' .. tostring(ARGV[1]))
end
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function cond(msg)
  return cjson.encode({message = msg})
end
-- Move every task of a worker that stops out of its pending list and running
-- set. Pending tasks never started: back to the queue. Running tasks, by `mode`:
--   '1'    requeued while retries are left (the attempt counts), else failed with msg;
--   '0'    failed with msg;
--   'free' requeued, the attempt not counted (preemption, node failure: not the task's fault);
--   'hold' as 'free', and the keys are kept in released:{wid} until the scheduler's verdict
--          on the job counts the attempt or not (settle_released.lua): a batch worker
--          that gets SIGTERM cannot tell a preemption from a cancel or a time limit.
-- A task's retries used are attempt - free (attempt stays the fencing token). Tasks a
-- worker created itself (push_running_tasks, origin worker) fail with it in every mode.
-- K holds the declared keys it changes: K.queued, K.running, K.failed.
local function release_tasks(wid, mode, msg, t, K)
  local pend = P .. 'pending:' .. wid
  local k = redis.call('RPOP', pend)
  while k do
    redis.call('RPUSH', K.queued, k)
    k = redis.call('RPOP', pend)
  end
  local wt = P .. 'worker_tasks:' .. wid
  local failed = 0
  local requeued = 0
  local uncounted = mode == 'free' or mode == 'hold'
  for _, key in ipairs(redis.call('SMEMBERS', wt)) do
    local tk = P .. 'task:' .. key
    if redis.call('SREM', K.running, key) == 1 then
      local v = redis.call('HMGET', tk, 'attempt', 'max_retries', 'free', 'origin')
      local used = (tonumber(v[1] or '0') or 0) - (tonumber(v[3] or '0') or 0)
      local maxr = tonumber(v[2] or '0') or 0
      -- a task its worker created (origin worker) is not requeued: it fails with its worker
      if v[4] ~= 'worker' and (uncounted or (mode == '1' and used <= maxr)) then
        if uncounted then
          redis.call('HINCRBY', tk, 'free', 1)
          if mode == 'hold' then redis.call('SADD', P .. 'released:' .. wid, key) end
        end
        redis.call('HSET', tk, 'state', 'queued')
        redis.call('HDEL', tk, 'worker_id', 'started_at')
        redis.call('RPUSH', K.queued, key)
        requeued = requeued + 1
      else
        redis.call('HSET', tk, 'state', 'failed', 'condition', cond(msg), 'finished_at', t)
        redis.call('RPUSH', K.failed, key)
        failed = failed + 1
      end
    end
  end
  redis.call('DEL', wt)
  return {failed, requeued}
end
-- Claim one task for a worker: running under it, with the next attempt number
-- (the fencing token finish checks). Returns {key, xs, xs_extra, attempt}.
local function claim(k, wid, running, wtasks)
  local tk = P .. 'task:' .. k
  local attempt = redis.call('HINCRBY', tk, 'attempt', 1)
  redis.call('HSET', tk, 'state', 'running', 'worker_id', wid, 'started_at', now())
  redis.call('SADD', running, k)
  redis.call('SADD', wtasks, k)
  local v = redis.call('HMGET', tk, 'xs', 'xs_extra')
  return {k, v[1], v[2] or '', tostring(attempt)}
end
-- A running worker becomes `new` (lost, killed, ...) with a reason; its tasks are released.
-- from_set, to_set: the declared workers:<state> sets; K: K.workers, K.queued, K.running, K.failed.
local function stop_worker(wid, from_set, to_set, new, reason, mode, msg, t, K)
  if redis.call('SMOVE', from_set, to_set, wid) == 0 then return nil end
  redis.call('SADD', K.workers, wid)
  redis.call('HSET', P .. 'worker:' .. wid, 'worker_id', wid, 'state', new, 'reason', reason, 'stopped_at', t)
  redis.call('DEL', P .. 'heartbeat:' .. wid)
  local r = release_tasks(wid, mode, msg, t, K)
  return {wid, r[1], r[2]}
end
