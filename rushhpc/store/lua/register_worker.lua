-- A worker registers as running. Refused when the id is taken, when the network was
-- made by another protocol version, or when the network does not exist (reset).
-- A lost worker comes back under its id when the scheduler requeued its job
-- (preemption, node failure): same job id, a higher restart count than it registered
-- with (SLURM_RESTART_COUNT), so one run of a job never registers twice.
-- KEYS: workers, workers:running, worker(wid), heartbeat(wid), workers:pending, meta, workers:lost
-- ARGV: prefix, wid, heartbeat_expire (0 = no heartbeat), schema, job_id, restart count,
--       (field, value)*
local wid = ARGV[2]
local schema = redis.call('HGET', KEYS[6], 'schema')
if not schema then
  return redis.error_reply('NONETWORK network ' .. P .. ' does not exist (never created, or reset)')
end
if schema ~= ARGV[4] then
  return redis.error_reply('SCHEMA network uses protocol version ' .. schema .. ', this worker speaks ' .. ARGV[4])
end
local v = redis.call('HMGET', KEYS[3], 'state', 'job_id', 'restart')
local s = v[1]
if s and s ~= 'pending' then
  local again = s == 'lost' and ARGV[5] ~= '' and v[2] == ARGV[5]
                and (tonumber(ARGV[6]) or 0) > (tonumber(v[3] or '0') or 0)
  if not again then
    return redis.error_reply('TAKEN worker id ' .. wid .. ' is already registered (' .. s .. ')')
  end
  redis.call('SREM', KEYS[7], wid)
  redis.call('HINCRBY', KEYS[3], 'requeues', 1)
  redis.call('HSET', KEYS[3], 'last_reason', redis.call('HGET', KEYS[3], 'reason') or '')
  redis.call('HDEL', KEYS[3], 'stopped_at', 'reason', 'terminate')
end
local fields = {'restart', ARGV[6]}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
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
