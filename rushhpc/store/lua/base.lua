-- Shared by every script (prepended first; claim.lua and helpers.lua follow where used:
-- each function defined here is a closure Redis makes again on every call). Every key a script touches is declared in KEYS,
-- except the per-item keys whose names are data (a task's hash, a worker's hash, heartbeat,
-- pending list, task set or released set, for ids read from a list, a set or the arguments): those are
-- built here from P, the "{net}:" hash tag of KEYS[1], so they hash to KEYS[1]'s Redis
-- Cluster slot by construction. ARGV[1] repeats the prefix as a check (a caller that mixes
-- networks gets an error, not a write to another one). Fixed keys (queued, running, failed,
-- workers, workers:<state>, ...) are never built: they come in KEYS. Timestamps come from the
-- server clock (TIME): node clocks drift.
local P = string.match(KEYS[1], '^{[^}]+}:')
if not P or ARGV[1] ~= P then
  return redis.error_reply('KEYS KEYS[1] ' .. tostring(KEYS[1]) .. ' is not a key of network ' .. tostring(ARGV[1]))
end
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function cond(msg)
  return cjson.encode({message = msg})
end
-- One command for a whole list of members (SADD, SREM, RPUSH, LPUSH ...), in chunks
-- that stay within Lua's stack for unpack.
local function many(cmd, key, list)
  local n = #list
  if n == 0 then return end
  if n <= 1000 then return redis.call(cmd, key, unpack(list)) end
  for lo = 1, n, 1000 do
    redis.call(cmd, key, unpack(list, lo, math.min(lo + 999, n)))
  end
end
