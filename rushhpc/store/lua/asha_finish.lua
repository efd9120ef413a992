-- ASHA: finish a worker's evaluation and enter its result in its rung's sorted set, one step, so a
-- promotion (asha_claim.lua) sees exactly the results finished before its claim. First writer wins as in
-- finish_tasks.lua: only a task still running under this worker is finished.
-- KEYS: running, finished, worker_tasks(wid), worker(wid), rung
-- ARGV: prefix, wid, task key, ys JSON, config id, score ('' when the result has no value: not ranked)
-- Returns 1 finished | 0 discarded.
local tk = P .. 'task:' .. ARGV[3]
local cur = redis.call('HMGET', tk, 'worker_id', 'state')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
redis.call('HSET', tk, 'state', 'finished', 'finished_at', now(), 'ys', ARGV[4])
redis.call('SREM', KEYS[1], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[3])
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5]) end
return 1
