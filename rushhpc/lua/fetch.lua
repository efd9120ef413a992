-- Task records as one JSON array.
-- KEYS: queued, running, finished, failed, workers
-- ARGV: prefix, mode, ...
--   mode 'range': state (finished|failed), start, stop  -> records of LRANGE of that list
--   mode 'keys': key*                                   -> records of these keys
--   mode 'states': state*                               -> records of these states (one atomic read)
local mode = ARGV[2]
local acc = {}
if mode == 'range' then
  local list = ARGV[3] == 'failed' and KEYS[4] or KEYS[3]
  collect(redis.call('LRANGE', list, tonumber(ARGV[4]), tonumber(ARGV[5])), acc)
elseif mode == 'keys' then
  local ks = {}
  for i = 3, #ARGV do ks[#ks + 1] = ARGV[i] end
  collect(ks, acc)
elseif mode == 'states' then
  for i = 3, #ARGV do collect(keys_of(ARGV[i]), acc) end
end
return '[' .. table.concat(acc) .. ']'
