-- Task keys by state, read in one atomic step.
-- KEYS: queued, running, finished, failed, workers.  ARGV: prefix, state*.  Returns {state, key*}*
local out = {}
for i = 2, #ARGV do
  local row = {ARGV[i]}
  for _, k in ipairs(keys_of(ARGV[i])) do row[#row + 1] = k end
  out[#out + 1] = row
end
return out
