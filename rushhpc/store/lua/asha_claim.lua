-- ASHA and asynchronous Hyperband: a free worker's choice and claim in one step (rushhpc/sweeps/strategies/asha.py).
-- Within one bracket (ASHA has one; Hyperband's worker drew it), highest rung first, a configuration in the top
-- floor(n/eta) of the n results of its rung (ascending score: the sign makes lower better) not promoted from that
-- rung yet is promoted: marked in the promoted set and created as this worker's running task at the next rung.
-- A promotion whose task failed without being evaluated (its worker was lost or killed: the task has no asha_done)
-- is promotable again, at most `retries` times. Otherwise the new configuration of the arguments is created at the
-- bracket's lowest rung. Two workers never promote the same configuration: the check and the mark are this one
-- script. With a fidelity budget, a claim whose fidelity (the increment over the lower rung when the objective
-- resumes from its checkpoint, else the whole fidelity) would take the spent fidelity beyond it is not made: a
-- promotion that does not fit is skipped, and when the new configuration does not fit either, nothing is claimed
-- and the refused key is set. `started_at` is the server time of the claim, as for push_running_tasks (origin
-- worker: a lost worker's evaluation fails, it is never requeued).
-- KEYS: running, all_tasks, worker_tasks(wid), worker(wid), promoted, configs, promotions, lost, spent, refused,
--       the bracket's rung keys (its lowest rung first)
-- ARGV: prefix, wid, max_tasks ('' for none), eta, new task key, new config id, new xs, promotion task key,
--       retries, max fidelity ('' for none), incremental ('1' | '0'), rung offset (global index of the bracket's
--       lowest rung), bracket ('' for ASHA), fidelity of each of the bracket's rungs
-- xs_extra: {config, rung (global), fidelity, cost (the fidelity this claim spends), bracket (Hyperband)}.
-- Returns {worker state, terminate flag, '1' created | '0' refused (max_tasks or fidelity budget), task key, xs,
--          xs_extra}.
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state = w[1] or 'unregistered'
if state ~= 'running' then return {state, w[2] or '0', '0'} end
local cap = tonumber(ARGV[3])
if cap and redis.call('LLEN', KEYS[2]) + 1 > cap then return {'running', w[2] or '0', '0'} end
local eta = tonumber(ARGV[4])
local retries = tonumber(ARGV[9]) or 0
local maxf = tonumber(ARGV[10])
local incremental = ARGV[11] == '1'
local offset = tonumber(ARGV[12])
local bracket = ARGV[13]
local F = 13
local nrungs = #KEYS - 10
local t = now()
local spent = tonumber(redis.call('GET', KEYS[9]) or '0')
local function fits(cost)
  return not maxf or spent + cost <= maxf + 1e-9
end
local function create(k, xs, extra, cost)
  local tk = P .. 'task:' .. k
  redis.call('HSET', tk, 'state', 'running', 'xs', xs, 'xs_extra', extra, 'worker_id', wid, 'attempt', '1',
             'max_retries', '0', 'created_at', t, 'started_at', t, 'origin', 'worker')
  redis.call('SADD', KEYS[1], k)
  redis.call('SADD', KEYS[3], k)
  redis.call('RPUSH', KEYS[2], k)
  redis.call('INCRBYFLOAT', KEYS[9], cost)
  return {'running', w[2] or '0', '1', k, xs, extra}
end
local function extra(config, r, cost)
  local b = ''
  if bracket ~= '' then b = ',"bracket":' .. bracket end
  return '{"config":"' .. config .. '","rung":' .. (offset + r) .. ',"fidelity":' .. ARGV[F + 1 + r] ..
         ',"cost":' .. cost .. b .. '}'
end
-- a promotion of c from its bracket's rung r: 1 new, 2 again after its task was lost (not evaluated); else nil
local function promotable(id)
  if redis.call('SISMEMBER', KEYS[5], id) == 0 then return 1 end
  local tk = redis.call('HGET', KEYS[7], id)
  if not tk then return nil end
  local v = redis.call('HMGET', P .. 'task:' .. tk, 'state', 'asha_done')
  if v[1] == 'failed' and v[2] ~= '1' and tonumber(redis.call('HGET', KEYS[8], id) or '0') < retries then
    return 2
  end
  return nil
end
for r = nrungs - 2, 0, -1 do
  local rk = KEYS[11 + r]
  local top = math.floor(redis.call('ZCARD', rk) / eta)
  if top > 0 then
    local cost = tonumber(ARGV[F + 2 + r])
    if incremental then cost = cost - tonumber(ARGV[F + 1 + r]) end
    if fits(cost) then
      for _, c in ipairs(redis.call('ZRANGE', rk, 0, top - 1)) do
        local id = c .. ':' .. (offset + r)
        local how = promotable(id)
        if how then
          redis.call('SADD', KEYS[5], id)
          redis.call('HSET', KEYS[7], id, ARGV[8])
          if how == 2 then redis.call('HINCRBY', KEYS[8], id, 1) end
          return create(ARGV[8], redis.call('HGET', KEYS[6], c), extra(c, r + 1, cost), cost)
        end
      end
    end
  end
end
local cost0 = tonumber(ARGV[F + 1])
if not fits(cost0) then
  redis.call('SET', KEYS[10], '1')
  return {'running', w[2] or '0', '0'}
end
redis.call('HSET', KEYS[6], ARGV[6], ARGV[7])
return create(ARGV[5], ARGV[7], extra(ARGV[6], 0, cost0), cost0)
