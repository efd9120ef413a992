-- A worker registers as running. Refused when the id is taken, when the network was
-- made by another protocol version, or when the network does not exist (reset).
-- KEYS: workers, workers:running, worker(wid), heartbeat(wid), workers:pending, meta
-- ARGV: prefix, wid, heartbeat_expire (0 = no heartbeat), schema, (field, value)*
local wid = ARGV[2]
local schema = redis.call('HGET', KEYS[6], 'schema')
if not schema then
  return redis.error_reply('NONETWORK network ' .. P .. ' does not exist (never created, or reset)')
end
if schema ~= ARGV[4] then
  return redis.error_reply('SCHEMA network uses protocol version ' .. schema .. ', this worker speaks ' .. ARGV[4])
end
local s = redis.call('HGET', KEYS[3], 'state')
if s and s ~= 'pending' then return redis.error_reply('TAKEN worker id ' .. wid .. ' is already registered (' .. s .. ')') end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], 'worker_id', wid, 'state', 'running', 'started_at', now(), unpack(fields))
redis.call('SADD', KEYS[1], wid)
redis.call('SADD', KEYS[2], wid)
redis.call('SREM', KEYS[5], wid)
local ex = tonumber(ARGV[3])
if ex > 0 then
  redis.call('HSET', KEYS[3], 'heartbeat_expire', ARGV[3])
  redis.call('SET', KEYS[4], '1', 'EX', ex)
end
return 'running'
