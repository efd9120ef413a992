-- Every worker's hash and whether its heartbeat key is alive, in one step.
-- KEYS: workers, workers:pending.  ARGV: prefix.  Returns {hgetall..., 'heartbeat_alive', 0/1}*
local out = {}
for _, wid in ipairs(redis.call('SUNION', KEYS[1], KEYS[2])) do
  local h = redis.call('HGETALL', P .. 'worker:' .. wid)
  h[#h + 1] = 'heartbeat_alive'
  h[#h + 1] = tostring(redis.call('EXISTS', P .. 'heartbeat:' .. wid))
  out[#out + 1] = h
end
return out
