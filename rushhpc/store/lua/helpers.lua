-- Helpers of the scripts that stop workers (prepended after base.lua).
-- Move every task of a worker that stops out of its pending list and running
-- set. Pending tasks never started: back to the queue. So are prefetched running tasks
-- the worker never started (no started_at, claim.lua), their claim's attempt undone:
-- not the task's fault, whatever the mode. Started running tasks, by `mode`:
--   '1'    requeued while retries are left (the attempt counts), else failed with msg;
--   '0'    failed with msg;
--   'free' requeued, the attempt not counted (preemption, node failure: not the task's fault);
--   'hold' as 'free', and the keys are kept in released:{wid} until the scheduler's verdict
--          on the job counts the attempt or not (settle_released.lua): a batch worker
--          that gets SIGTERM cannot tell a preemption from a cancel or a time limit.
-- A task's retries used are attempt - free (attempt stays the fencing token). Tasks a
-- worker created itself (push_running_tasks, origin worker) fail with it in every mode.
-- A task failed here gets `cause` in its 'cancel' field unless it is '' (a CancelCause of
-- rushhpc/core/states.py: a killed worker's task was not evaluated; a lost worker's was).
-- K holds the declared keys it changes: K.queued, K.running, K.failed.
local function release_tasks(wid, mode, msg, cause, t, K)
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
      local v = redis.call('HMGET', tk, 'attempt', 'max_retries', 'free', 'origin', 'started_at')
      local used = (tonumber(v[1] or '0') or 0) - (tonumber(v[3] or '0') or 0)
      local maxr = tonumber(v[2] or '0') or 0
      if not v[5] and v[4] ~= 'worker' then  -- prefetched, never started
        redis.call('HSET', tk, 'state', 'queued', 'attempt', tostring(math.max(0, (tonumber(v[1]) or 1) - 1)))
        redis.call('HDEL', tk, 'worker_id')
        redis.call('RPUSH', K.queued, key)
        requeued = requeued + 1
      -- a task its worker created (origin worker) is not requeued: it fails with its worker
      elseif v[4] ~= 'worker' and (uncounted or (mode == '1' and used <= maxr)) then
        if uncounted then
          redis.call('HINCRBY', tk, 'free', 1)
          if mode == 'hold' then redis.call('SADD', P .. 'released:' .. wid, key) end
        end
        redis.call('HSET', tk, 'state', 'queued')
        redis.call('HDEL', tk, 'worker_id', 'started_at')
        redis.call('RPUSH', K.queued, key)
        requeued = requeued + 1
      else
        if cause == '' then
          redis.call('HSET', tk, 'state', 'failed', 'condition', cond(msg), 'finished_at', t)
        else
          redis.call('HSET', tk, 'state', 'failed', 'condition', cond(msg), 'finished_at', t, 'cancel', cause)
        end
        redis.call('RPUSH', K.failed, key)
        failed = failed + 1
      end
    end
  end
  redis.call('DEL', wt)
  return {failed, requeued}
end
-- A running worker becomes `new` (lost, killed, ...) with a reason; its tasks are released
-- (`cause`: release_tasks).
-- from_set, to_set: the declared workers:<state> sets; K: K.workers, K.queued, K.running, K.failed.
local function stop_worker(wid, from_set, to_set, new, reason, mode, msg, cause, t, K)
  if redis.call('SMOVE', from_set, to_set, wid) == 0 then return nil end
  redis.call('SADD', K.workers, wid)
  redis.call('HSET', P .. 'worker:' .. wid, 'worker_id', wid, 'state', new, 'reason', reason, 'stopped_at', t)
  redis.call('DEL', P .. 'heartbeat:' .. wid)
  local r = release_tasks(wid, mode, msg, cause, t, K)
  return {wid, r[1], r[2]}
end
