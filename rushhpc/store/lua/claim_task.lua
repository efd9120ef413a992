-- Second phase of a blocking pop: the key sits in the worker's pending list (moved
-- there by BLMOVE); make it running. A worker that is no longer running gives the
-- key back to the queue. Idempotent per call token, as pop_task.
-- KEYS: pending(wid), running, worker_tasks(wid), worker(wid), queued
-- ARGV: prefix, wid, key, token.  Returns {key, xs, xs_extra, attempt} or false.
local wid = ARGV[2]
local k = ARGV[3]
local token = ARGV[4] or ''
if redis.call('LREM', KEYS[1], 1, k) == 0 then
  local w = redis.call('HMGET', KEYS[4], 'pop_token', 'pop_key')
  if token ~= '' and w[1] == token and w[2] == k and redis.call('SISMEMBER', KEYS[3], k) == 1 then
    local v = redis.call('HMGET', P .. 'task:' .. k, 'xs', 'xs_extra', 'attempt')
    return {k, v[1], v[2] or '', v[3]}
  end
  return false
end
if redis.call('HGET', KEYS[4], 'state') ~= 'running' then
  if redis.call('EXISTS', P .. 'task:' .. k) == 1 then redis.call('RPUSH', KEYS[5], k) end
  return false
end
local c = claim(k, wid, now(), true)
if not c then return false end
redis.call('SADD', KEYS[2], k)
redis.call('SADD', KEYS[3], k)
if token ~= '' then redis.call('HSET', KEYS[4], 'pop_token', token, 'pop_key', k) end
return c
