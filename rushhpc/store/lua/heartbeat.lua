-- The heartbeat process's beat: refresh only while the worker is registered and
-- running, so reset() leaves no key behind. Returns the worker's state.
-- KEYS: worker(wid), heartbeat(wid).  ARGV: prefix, expire
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'running' then redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2])) end
return s or ''
