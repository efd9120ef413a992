-- ASHA: end a worker's evaluation and, when it finished with a score, enter it in its rung's sorted set, one
-- step, so a promotion (asha_claim.lua) sees exactly the results finished before its claim. First writer wins
-- as in finish_tasks.lua: only a task still running under this worker is ended. The task gets asha_done: it was
-- evaluated (finished, or failed in its objective), so a failed promotion is not promoted again; a task failed
-- by its worker's loss has no asha_done.
-- KEYS: running, destination list (finished or failed), worker_tasks(wid), worker(wid), rung
-- ARGV: prefix, wid, task key, ys JSON (finished) | condition JSON (failed), config id,
--       score ('' when the result has no value: not ranked), state (finished | failed)
-- Returns 1 ended | 0 discarded.
local tk = P .. 'task:' .. ARGV[3]
local cur = redis.call('HMGET', tk, 'worker_id', 'state')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
local field = 'ys'
if ARGV[7] == 'failed' then field = 'condition' end
redis.call('HSET', tk, 'state', ARGV[7], 'finished_at', now(), field, ARGV[4], 'asha_done', '1')
redis.call('SREM', KEYS[1], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[3])
if ARGV[7] ~= 'failed' and ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5]) end
return 1
