-- A worker creates tasks it evaluates itself (propose/evaluate/report). `origin` worker:
-- such a task is never requeued (no one may pop a queue in that pattern; helpers.lua).
-- KEYS: running, all_tasks, worker_tasks(wid), worker(wid)
-- ARGV: prefix, wid, (key, xs, xs_extra)*.  Returns {worker state, terminate flag}.
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
               'attempt', '1', 'max_retries', '0', 'created_at', t, 'started_at', t, 'origin', 'worker')
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    redis.call('SADD', KEYS[1], k)
    redis.call('SADD', KEYS[3], k)
    redis.call('RPUSH', KEYS[2], k)
  end
end
return {'running', w[2] or '0'}
