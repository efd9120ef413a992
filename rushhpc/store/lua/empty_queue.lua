-- Fail every queued task with a message, and why in its 'cancel' field (a CancelCause of
-- rushhpc/core/states.py, CANCEL_FIELD): a reader tells it from a failed evaluation by that, not the words.
-- KEYS: queued, failed.  ARGV: prefix, message, cancel cause.  Returns the number moved.
local t = now()
local c = cond(ARGV[2])
local n = 0
local k = redis.call('RPOP', KEYS[1])
while k do
  redis.call('HSET', P .. 'task:' .. k, 'state', 'failed', 'condition', c, 'finished_at', t, 'cancel', ARGV[3])
  redis.call('RPUSH', KEYS[2], k)
  n = n + 1
  k = redis.call('RPOP', KEYS[1])
end
return n
