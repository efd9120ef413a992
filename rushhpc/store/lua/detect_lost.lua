-- Running workers that have a heartbeat whose key expired: lost, in one step.
-- Workers of a batch job (field `managed`) are only reported: the scheduler's view
-- decides for them (a suspended job is silent, not dead).
-- KEYS: workers:running, launches:active, workers:lost, workers, queued, running, failed, meta,
--       workers:terminated, workers:failed, workers:killed
-- ARGV: prefix, retry (1/0)
-- Returns {{wid, failed_tasks, requeued_tasks}*, {expired managed wid}*, number of active batch launches,
--          number of active batch launches whose worker already ended (its job's end is to be read soon),
--          1 if the network exists (its meta hash), else 0}.
local mode = ARGV[2] == '1' and '1' or '0'
local t = now()
local out = {}
local managed = {}
local K = {workers = KEYS[4], queued = KEYS[5], running = KEYS[6], failed = KEYS[7]}
for _, wid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', P .. 'worker:' .. wid, 'heartbeat_expire', 'managed')
  if v[1] and redis.call('EXISTS', P .. 'heartbeat:' .. wid) == 0 then
    if v[2] == '1' then
      managed[#managed + 1] = wid
    else
      out[#out + 1] = stop_worker(wid, KEYS[1], KEYS[3], 'lost', 'heartbeat_expired', mode,
                                  'worker ' .. wid .. ' was lost (heartbeat expired)', '', t, K)
    end
  end
end
local n_active = redis.call('SCARD', KEYS[2])
local ending = 0
if n_active > 0 then
  for _, ended in ipairs({KEYS[3], KEYS[9], KEYS[10], KEYS[11]}) do  -- lost, terminated, failed, killed
    ending = ending + #redis.call('SINTER', KEYS[2], ended)
  end
end
return {out, managed, n_active, ending, redis.call('EXISTS', KEYS[8])}
