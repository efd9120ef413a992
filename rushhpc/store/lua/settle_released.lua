-- The scheduler's verdict on a batch worker that got SIGTERM and released its running
-- tasks uncounted (mode 'hold', helpers.lua). A preemption or a node failure is not the
-- tasks' fault: the attempts stay uncounted. Anything else (cancelled, time limit, out
-- of memory, a failure) counts them now; a task still queued with no retries left then
-- fails with msg. Tasks that have moved on (running again, finished) only keep the count.
-- KEYS: released(wid), queued, failed.  ARGV: prefix, count (1/0), msg.
-- Returns the number of tasks that failed.
local failed = 0
if ARGV[2] == '1' then
  local t = now()
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local tk = P .. 'task:' .. key
    local v = redis.call('HMGET', tk, 'state', 'attempt', 'max_retries', 'free')
    local free = tonumber(v[4] or '0') or 0
    if v[1] and free > 0 then
      redis.call('HINCRBY', tk, 'free', -1)
      local used = (tonumber(v[2] or '0') or 0) - (free - 1)
      if v[1] == 'queued' and used > (tonumber(v[3] or '0') or 0)
          and redis.call('LREM', KEYS[2], 1, key) == 1 then
        redis.call('HSET', tk, 'state', 'failed', 'condition', cond(ARGV[3]), 'finished_at', t)
        redis.call('RPUSH', KEYS[3], key)
        failed = failed + 1
      end
    end
  end
end
redis.call('DEL', KEYS[1])
return failed
