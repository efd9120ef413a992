-- Task records as one JSON array.
-- KEYS: queued, running, finished, failed, workers
-- ARGV: prefix, mode, ...
--   mode 'range': state (finished|failed), start, stop  -> records of LRANGE of that list
--   mode 'range_n': as 'range'                          -> {length of that list, records}
--   mode 'keys': key*                                   -> records of these keys
--   mode 'states': state*                               -> records of these states (one atomic read)
local mode = ARGV[2]
local acc = {}
if mode == 'range' or mode == 'range_n' then
  local list = ARGV[3] == 'failed' and KEYS[4] or KEYS[3]
  collect(redis.call('LRANGE', list, tonumber(ARGV[4]), tonumber(ARGV[5])), acc)
  if mode == 'range_n' then return {redis.call('LLEN', list), '[' .. table.concat(acc) .. ']'} end
elseif mode == 'keys' then
  local ks = {}
  for i = 3, #ARGV do ks[#ks + 1] = ARGV[i] end
  collect(ks, acc)
elseif mode == 'states' then
  for i = 3, #ARGV do collect(keys_of(ARGV[i]), acc) end
end
return '[' .. table.concat(acc) .. ']'
