-- Workers leave `running` (or `pending`, launched but never registered): terminated,
-- failed, killed or lost. Only a running or pending worker changes state: the first
-- verdict stands.
-- KEYS: workers:<source>, workers:<new>, workers, queued, running, failed
-- ARGV: prefix, new_state, release mode of running tasks (1, 0, free, hold: helpers.lua),
--       the cancel cause of the tasks it fails ('' for none: helpers.lua), (wid, reason, task_message)*
-- Returns {wid, failed_tasks, requeued_tasks}* for the workers that changed.
local new = ARGV[2]
local mode = ARGV[3]
local cause = ARGV[4]
local t = now()
local out = {}
local K = {workers = KEYS[3], queued = KEYS[4], running = KEYS[5], failed = KEYS[6]}
for i = 5, #ARGV, 3 do
  local r = stop_worker(ARGV[i], KEYS[1], KEYS[2], new, ARGV[i + 1], mode, ARGV[i + 2], cause, t, K)
  if r then out[#out + 1] = r end
end
return out
