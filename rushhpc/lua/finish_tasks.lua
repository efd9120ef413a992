-- First writer wins: a task becomes final only if it is still running under this
-- worker and attempt (the fencing token). Anything else is discarded.
-- KEYS: running, destination list (finished or failed), worker_tasks(wid), worker(wid)
-- ARGV: prefix, wid, state, (key, attempt or '*', field1, value1, field2, value2)*
-- Returns {discarded keys, worker state, terminate flag}.
local wid = ARGV[2]
local state = ARGV[3]
local t = now()
local discarded = {}
for i = 4, #ARGV, 6 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  local cur = redis.call('HMGET', tk, 'worker_id', 'attempt')
  if cur[1] == wid and (ARGV[i + 1] == '*' or cur[2] == ARGV[i + 1])
     and redis.call('SREM', KEYS[1], k) == 1 then
    redis.call('SREM', KEYS[3], k)
    redis.call('HSET', tk, 'state', state, 'finished_at', t, ARGV[i + 2], ARGV[i + 3])
    if ARGV[i + 5] ~= '' then redis.call('HSET', tk, ARGV[i + 4], ARGV[i + 5]) end
    redis.call('RPUSH', KEYS[2], k)
  else
    discarded[#discarded + 1] = k
  end
end
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
return {discarded, w[1] or 'unregistered', w[2] or '0'}
