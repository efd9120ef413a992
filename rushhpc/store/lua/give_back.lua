-- A worker gives a task it claimed back untouched (too little walltime left for it): to
-- the head of the queue, the attempt not counted as a retry (helpers.lua, 'free').
-- Only while the task still runs under this worker with this attempt.
-- KEYS: running, worker_tasks(wid), queued.  ARGV: prefix, wid, key, attempt.  Returns 1 or 0.
local tk = P .. 'task:' .. ARGV[3]
local v = redis.call('HMGET', tk, 'worker_id', 'attempt', 'state')
if v[1] ~= ARGV[2] or v[2] ~= ARGV[4] or v[3] ~= 'running' then return 0 end
redis.call('SREM', KEYS[1], ARGV[3])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('HINCRBY', tk, 'free', 1)
redis.call('HSET', tk, 'state', 'queued')
redis.call('HDEL', tk, 'worker_id', 'started_at')
redis.call('RPUSH', KEYS[3], ARGV[3])  -- workers pop from the right: it is next
return 1
