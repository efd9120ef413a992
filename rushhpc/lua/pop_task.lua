-- Pop and claim in one step while the queue has tasks (no intermediate state to lose).
-- KEYS: queued, running, worker_tasks(wid), worker(wid)
-- ARGV: prefix, wid.  Returns {key or '', xs, xs_extra, attempt, worker state, terminate flag}.
local wid = ARGV[2]
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate')
local state, term = w[1] or 'unregistered', w[2] or '0'
if state ~= 'running' or term == '1' then return {'', '', '', '', state, term} end
local k = redis.call('RPOP', KEYS[1])
while k do
  if redis.call('EXISTS', P .. 'task:' .. k) == 1 then
    local c = claim(k, wid, KEYS[2], KEYS[3])
    return {c[1], c[2], c[3], c[4], state, term}
  end
  k = redis.call('RPOP', KEYS[1])  -- a key whose task was deleted (reset): skip it
end
return {'', '', '', '', state, term}
