-- Tasks the manager records as already finished or failed.
-- KEYS: destination list, all_tasks.  ARGV: prefix, state, (key, xs, xs_extra, f1, v1, f2, v2)*
local state = ARGV[2]
local t = now()
for i = 3, #ARGV, 7 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 0 then
    redis.call('HSET', tk, 'state', state, 'xs', ARGV[i + 1], 'attempt', '0', 'max_retries', '0',
               'created_at', t, 'finished_at', t, ARGV[i + 3], ARGV[i + 4])
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    if ARGV[i + 6] ~= '' then redis.call('HSET', tk, ARGV[i + 5], ARGV[i + 6]) end
    redis.call('RPUSH', KEYS[1], k)
    redis.call('RPUSH', KEYS[2], k)
  end
end
return 1
