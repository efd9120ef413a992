-- First writer wins: a task becomes final only if it is still running under this
-- worker and attempt (the fencing token). Anything else is discarded. A task is in
-- the running set exactly while its hash says `running` (every script changes both),
-- so the hash alone decides, and the sets and the list change once per call.
-- Optionally marks prefetched tasks of the worker as started (piggybacked: no call of its own).
-- KEYS: running, destination list (finished or failed), worker_tasks(wid), worker(wid)
-- ARGV: prefix, wid, state, start keys (space-separated, '' for none), (key, attempt or '*', field1, value1, field2, value2)*
-- Returns {discarded keys}.
local wid = ARGV[2]
local state = ARGV[3]
local t = now()
local tp = P .. 'task:'
local discarded = {}
local done = {}
for i = 5, #ARGV, 6 do
  local k = ARGV[i]
  local tk = tp .. k
  local cur = redis.call('HMGET', tk, 'worker_id', 'attempt', 'state')
  if cur[1] == wid and cur[3] == 'running' and (ARGV[i + 1] == '*' or cur[2] == ARGV[i + 1]) then
    if ARGV[i + 5] == '' then
      redis.call('HSET', tk, 'state', state, 'finished_at', t, ARGV[i + 2], ARGV[i + 3])
    else
      redis.call('HSET', tk, 'state', state, 'finished_at', t, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
    end
    done[#done + 1] = k
  else
    discarded[#discarded + 1] = k
  end
end
many('SREM', KEYS[1], done)
many('SREM', KEYS[3], done)
many('RPUSH', KEYS[2], done)
if ARGV[4] ~= '' then
  for s in string.gmatch(ARGV[4], '%S+') do
    if redis.call('SISMEMBER', KEYS[3], s) == 1 then redis.call('HSET', tp .. s, 'started_at', t) end
  end
end
return {discarded}
