-- Queue tasks. Idempotent: a retried call adds nothing.
-- KEYS: queued, all_tasks.  ARGV: prefix, max_retries, (key, xs, xs_extra)*.  Returns the number added.
local mr = ARGV[2]
local t = now()
local n = 0
for i = 3, #ARGV, 3 do
  local k = ARGV[i]
  local tk = P .. 'task:' .. k
  if redis.call('EXISTS', tk) == 0 then
    redis.call('HSET', tk, 'state', 'queued', 'xs', ARGV[i + 1], 'attempt', '0',
               'max_retries', mr, 'created_at', t)
    if ARGV[i + 2] ~= '' then redis.call('HSET', tk, 'xs_extra', ARGV[i + 2]) end
    redis.call('LPUSH', KEYS[1], k)
    redis.call('RPUSH', KEYS[2], k)
    n = n + 1
  end
end
return n
