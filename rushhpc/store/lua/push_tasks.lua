-- Queue tasks. Idempotent: a retried call adds nothing.
-- KEYS: queued, all_tasks.  ARGV: prefix, max_retries, (key, xs, xs_extra)*.  Returns the number added.
local mr = ARGV[2]
local t = now()
local tp = P .. 'task:'
local new = {}
for i = 3, #ARGV, 3 do
  local k = ARGV[i]
  local tk = tp .. k
  if redis.call('EXISTS', tk) == 0 then
    if ARGV[i + 2] == '' then
      redis.call('HSET', tk, 'state', 'queued', 'xs', ARGV[i + 1], 'attempt', '0', 'max_retries', mr, 'created_at', t)
    else
      redis.call('HSET', tk, 'state', 'queued', 'xs', ARGV[i + 1], 'attempt', '0', 'max_retries', mr, 'created_at', t,
                 'xs_extra', ARGV[i + 2])
    end
    new[#new + 1] = k
  end
end
many('LPUSH', KEYS[1], new)
many('RPUSH', KEYS[2], new)
return #new
