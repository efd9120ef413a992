-- Pop and claim up to `count` queued tasks in one step while the queue has tasks (no
-- intermediate state to lose). The first `started` of them are started; the rest are
-- prefetched (running under this worker without started_at: a stopping worker gives
-- them back to the queue, see claim.lua).
-- Idempotent per call token: a call re-sent after its reply was lost (a Redis restart, a
-- dropped connection) gets the tasks the first run claimed, instead of claiming more
-- that nobody would ever finish. Tasks a lost BLMOVE reply left in the worker's pending
-- list are served before the queue.
-- KEYS: queued, running, worker_tasks(wid), worker(wid), pending(wid)
-- ARGV: prefix, wid, token, count (default 1), started (default count).
-- Returns {worker state, terminate flag, (key, xs, xs_extra, attempt)*}.
local wid = ARGV[2]
local token = ARGV[3] or ''
local count = tonumber(ARGV[4] or '1') or 1
local started = tonumber(ARGV[5] or '') or count
local w = redis.call('HMGET', KEYS[4], 'state', 'terminate', 'pop_token', 'pop_key')
local state, term = w[1] or 'unregistered', w[2] or '0'
local out = {state, term}
if state ~= 'running' or term == '1' then return out end
if token ~= '' and w[3] == token and w[4] then
  for k in string.gmatch(w[4], '%S+') do
    if redis.call('SISMEMBER', KEYS[3], k) == 1 then
      local v = redis.call('HMGET', P .. 'task:' .. k, 'xs', 'xs_extra', 'attempt')
      out[#out + 1] = k; out[#out + 1] = v[1]; out[#out + 1] = v[2] or ''; out[#out + 1] = v[3]
    end
  end
  if #out > 2 then return out end
end
local t = now()
local got = {}
local src = KEYS[5]
while #got < count do
  local ks = redis.call('RPOP', src, count - #got)
  if not ks then
    if src == KEYS[1] then break end
    src = KEYS[1]
  else
    for _, k in ipairs(ks) do
      local c = claim(k, wid, t, #got < started)  -- a key whose task was deleted (reset) is skipped
      if c then
        got[#got + 1] = k
        out[#out + 1] = c[1]; out[#out + 1] = c[2]; out[#out + 1] = c[3]; out[#out + 1] = c[4]
      end
    end
  end
end
if #got > 0 then
  many('SADD', KEYS[2], got)
  many('SADD', KEYS[3], got)
  if token ~= '' then redis.call('HSET', KEYS[4], 'pop_token', token, 'pop_key', table.concat(got, ' ')) end
end
return out
