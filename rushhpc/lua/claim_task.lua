-- Second phase of a blocking pop: the key sits in the worker's pending list (moved
-- there by BLMOVE); make it running. A worker that is no longer running gives the
-- key back to the queue.
-- KEYS: pending(wid), running, worker_tasks(wid), worker(wid), queued
-- ARGV: prefix, wid, key.  Returns {key, xs, xs_extra, attempt} or false.
local wid = ARGV[2]
local k = ARGV[3]
if redis.call('LREM', KEYS[1], 1, k) == 0 then return false end
if redis.call('EXISTS', P .. 'task:' .. k) == 0 then return false end
if redis.call('HGET', KEYS[4], 'state') ~= 'running' then
  redis.call('RPUSH', KEYS[5], k)
  return false
end
return claim(k, wid, KEYS[2], KEYS[3])
