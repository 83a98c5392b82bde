-- gcra_forget: forgets buckets that are full again (their TAT has passed: a fresh
-- bucket would behave the same), one HSCAN step at a time, so the buckets hash
-- holds only the clients seen lately.
--
-- KEYS[1] the buckets hash   ARGV[1] the HSCAN cursor   ARGV[2] fields per step
--
-- Returns {next cursor ("0" when the scan is done), buckets forgotten}.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local step = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields, stale = step[2], {}
for i = 1, #fields, 2 do
  if tonumber(fields[i + 1]) <= now then stale[#stale + 1] = fields[i] end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
return {step[1], #stale}
