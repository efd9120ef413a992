-- Claim one task for a worker: running under it, with the next attempt number (the
-- fencing token finish checks). A started task gets started_at; a prefetched one
-- (claimed ahead, not started) has none until the worker starts it, and goes back to
-- the queue, attempt undone, if the worker stops first. The caller adds the key to the
-- running and worker_tasks sets (one SADD for a whole batch).
-- Returns {key, xs, xs_extra, attempt}, or nil when the task's hash is gone (reset).
local function claim(k, wid, t, started)
  local tk = P .. 'task:' .. k
  local v = redis.call('HMGET', tk, 'xs', 'xs_extra', 'attempt')
  if not v[1] then return nil end
  local attempt = tostring((tonumber(v[3]) or 0) + 1)
  if started then
    redis.call('HSET', tk, 'state', 'running', 'worker_id', wid, 'attempt', attempt, 'started_at', t)
  else
    redis.call('HSET', tk, 'state', 'running', 'worker_id', wid, 'attempt', attempt)
  end
  return {k, v[1], v[2] or '', attempt}
end
