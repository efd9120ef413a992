-- Counts of every task state in one step (tasks in pending lists count as queued).
-- KEYS: queued, running, finished, failed, all_tasks, workers.  ARGV: prefix
local pending = 0
for _, wid in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  pending = pending + redis.call('LLEN', P .. 'pending:' .. wid)
end
return {redis.call('LLEN', KEYS[1]) + pending, redis.call('SCARD', KEYS[2]),
        redis.call('LLEN', KEYS[3]), redis.call('LLEN', KEYS[4]), redis.call('LLEN', KEYS[5])}
