-- Build one JSON array of task records server-side, so a client decodes thousands of
-- tasks with a single parse. xs/ys/extras/condition are stored as JSON already; keys,
-- worker ids and states are validated plain tokens.
-- KEYS of every fetch script: queued, running, finished, failed, workers.
local FIELDS = {'state', 'worker_id', 'xs', 'xs_extra', 'ys', 'ys_extra', 'condition',
                'created_at', 'started_at', 'finished_at', 'attempt'}
local function rec(k)
  local v = redis.call('HMGET', P .. 'task:' .. k, unpack(FIELDS))
  if not v[1] then return nil end
  local parts = {'{"keys":"', k, '","state":"', v[1], '"'}
  if v[2] then parts[#parts + 1] = ',"worker_id":"' .. v[2] .. '"' end
  for j = 3, 11 do
    if v[j] then parts[#parts + 1] = ',"' .. FIELDS[j] .. '":' .. v[j] end
  end
  parts[#parts + 1] = '}'
  return table.concat(parts)
end
local function collect(keys, acc)
  for _, k in ipairs(keys) do
    local r = rec(k)
    if r then acc[#acc + 1] = r end
  end
  return acc
end
local function queued_keys()
  -- queue order: oldest first; tasks in pending lists count as queued
  local ks = {}
  for _, wid in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    for _, k in ipairs(redis.call('LRANGE', P .. 'pending:' .. wid, 0, -1)) do ks[#ks + 1] = k end
  end
  local q = redis.call('LRANGE', KEYS[1], 0, -1)
  for i = #q, 1, -1 do ks[#ks + 1] = q[i] end
  return ks
end
local function keys_of(state)
  if state == 'queued' then return queued_keys() end
  if state == 'running' then return redis.call('SMEMBERS', KEYS[2]) end
  if state == 'finished' then return redis.call('LRANGE', KEYS[3], 0, -1) end
  if state == 'failed' then return redis.call('LRANGE', KEYS[4], 0, -1) end
  return {}
end
