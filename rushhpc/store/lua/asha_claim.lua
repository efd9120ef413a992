-- ASHA: a free worker's choice and claim in one step (rushhpc/sweeps/strategies/asha.py).
-- Highest rung first, a configuration in the top floor(n/eta) of the n results of its rung (ascending
-- score: the sign makes lower better) not promoted from that rung yet is promoted: marked in the promoted
-- set and created as this worker's running task at the next rung. Otherwise the new configuration of the
-- arguments is created at the lowest rung. Two workers never promote the same configuration: the check and
-- the mark are this one script. `started_at` is the server time of the claim, as for push_running_tasks
-- (origin worker: a lost worker's evaluation fails, it is never requeued).
-- KEYS: running, all_tasks, worker_tasks(wid), worker(wid), promoted, configs, rung 0 .. rung K-1
-- ARGV: prefix, wid, max_tasks ('' for none), eta, new task key, new config id, new xs, promotion task key,
--       fidelity of rung 0 .. rung K-1
-- Returns {worker state, terminate flag, '1' created | '0' refused by max_tasks, task key, xs, xs_extra}.
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state = w[1] or 'unregistered'
if state ~= 'running' then return {state, w[2] or '0', '0'} end
local cap = tonumber(ARGV[3])
if cap and redis.call('LLEN', KEYS[2]) + 1 > cap then return {'running', w[2] or '0', '0'} end
local eta = tonumber(ARGV[4])
local nrungs = #KEYS - 6
local t = now()
local function create(k, xs, extra)
  local tk = P .. 'task:' .. k
  redis.call('HSET', tk, 'state', 'running', 'xs', xs, 'xs_extra', extra, 'worker_id', wid, 'attempt', '1',
             'max_retries', '0', 'created_at', t, 'started_at', t, 'origin', 'worker')
  redis.call('SADD', KEYS[1], k)
  redis.call('SADD', KEYS[3], k)
  redis.call('RPUSH', KEYS[2], k)
  return {'running', w[2] or '0', '1', k, xs, extra}
end
local function extra(config, rung)
  return '{"config":"' .. config .. '","rung":' .. rung .. ',"fidelity":' .. ARGV[9 + rung] .. '}'
end
for r = nrungs - 2, 0, -1 do
  local rk = KEYS[7 + r]
  local top = math.floor(redis.call('ZCARD', rk) / eta)
  if top > 0 then
    for _, c in ipairs(redis.call('ZRANGE', rk, 0, top - 1)) do
      if redis.call('SADD', KEYS[5], c .. ':' .. r) == 1 then
        return create(ARGV[8], redis.call('HGET', KEYS[6], c), extra(c, r + 1))
      end
    end
  end
end
redis.call('HSET', KEYS[6], ARGV[6], ARGV[7])
return create(ARGV[5], ARGV[7], extra(ARGV[6], 0))
