-- A worker creates tasks it evaluates itself (propose/evaluate/report). `origin` worker:
-- such a task is never requeued (no one may pop a queue in that pattern; helpers.lua).
-- KEYS: running, all_tasks, worker_tasks(wid), worker(wid)
-- ARGV: prefix, wid, max_tasks ('' for no limit), (key, xs, xs_extra)*.
-- With max_tasks, the tasks are created only if the network then holds at most max_tasks
-- tasks (all_tasks), all or none: the check and the creation are one step, so workers racing
-- for the last slots of a budget never create more. Keys that exist already (a call run
-- again after a lost reply) count as created, not again.
-- Returns {worker state, terminate flag, '1' created | '0' refused by max_tasks}.
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state = w[1] or 'unregistered'
if state ~= 'running' then return {state, w[2] or '0', '0'} end
local cap = tonumber(ARGV[3])
if cap then
  local new = 0
  for i = 4, #ARGV, 3 do
    if redis.call('EXISTS', P .. 'task:' .. ARGV[i]) == 0 then new = new + 1 end
  end
  if new > 0 and redis.call('LLEN', KEYS[2]) + new > cap then return {'running', w[2] or '0', '0'} end
end
local t = now()
local tp = P .. 'task:'
local new = {}
for i = 4, #ARGV, 3 do
  local k = ARGV[i]
  local tk = tp .. k
  if redis.call('EXISTS', tk) == 0 then
    if ARGV[i + 2] == '' then
      redis.call('HSET', tk, 'state', 'running', 'xs', ARGV[i + 1], 'worker_id', wid, 'attempt', '1',
                 'max_retries', '0', 'created_at', t, 'started_at', t, 'origin', 'worker')
    else
      redis.call('HSET', tk, 'state', 'running', 'xs', ARGV[i + 1], 'worker_id', wid, 'attempt', '1',
                 'max_retries', '0', 'created_at', t, 'started_at', t, 'origin', 'worker', 'xs_extra', ARGV[i + 2])
    end
    new[#new + 1] = k
  end
end
-- one command per set and list for the whole call
many('SADD', KEYS[1], new)
many('SADD', KEYS[3], new)
many('RPUSH', KEYS[2], new)
return {'running', w[2] or '0', '1'}
