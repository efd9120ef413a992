-- Pop and claim in one step while the queue has tasks (no intermediate state to lose).
-- Idempotent per call token: a call re-sent after its reply was lost (a Redis restart, a
-- dropped connection) gets the task the first run claimed, instead of claiming a second one
-- that nobody would ever finish. A task a lost BLMOVE reply left in the worker's pending list
-- is served before the queue.
-- KEYS: queued, running, worker_tasks(wid), worker(wid), pending(wid)
-- ARGV: prefix, wid, token.  Returns {key or '', xs, xs_extra, attempt, worker state, terminate flag}.
local wid = ARGV[2]
local token = ARGV[3] or ''
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate', 'pop_token', 'pop_key')
local state, term = w[1] or 'unregistered', w[2] or '0'
if state ~= 'running' or term == '1' then return {'', '', '', '', state, term} end
if token ~= '' and w[3] == token and w[4] and redis.call('SISMEMBER', KEYS[3], w[4]) == 1 then
  local v = redis.call('HMGET', P .. 'task:' .. w[4], 'xs', 'xs_extra', 'attempt')
  return {w[4], v[1], v[2] or '', v[3], state, term}
end
local k = redis.call('RPOP', KEYS[5])
if not k then k = redis.call('RPOP', KEYS[1]) end
while k do
  if redis.call('EXISTS', P .. 'task:' .. k) == 1 then
    local c = claim(k, wid, KEYS[2], KEYS[3])
    if token ~= '' then redis.call('HSET', KEYS[4], 'pop_token', token, 'pop_key', k) end
    return {c[1], c[2], c[3], c[4], state, term}
  end
  k = redis.call('RPOP', KEYS[1])  -- a key whose task was deleted (reset): skip it
end
return {'', '', '', '', state, term}
