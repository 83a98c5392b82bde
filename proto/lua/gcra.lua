-- gcra: rate limits shared by every gateway. Each bucket is a GCRA (generic cell
-- rate algorithm) bucket: one number, its theoretical arrival time (TAT, µs), in
-- one hash for the whole tier, so a batch of checks is three commands whatever its
-- size. A check is admitted when its TAT is at most `tolerance` ahead of now; the
-- TAT then moves on by one emission interval. A refused check changes nothing.
--
-- KEYS[1] the buckets hash (`<p>:{rl}:buckets`: one slot; field = bucket, value = TAT)
-- ARGV    triples, one per check: bucket name, emission interval µs (1 / rate),
--         tolerance µs ((burst − 1) × interval)
--
-- Returns one number per check, in order: 0 if admitted (and counted), else the µs
-- to wait before the bucket would admit it.
--
-- Atomicity: the batch is decided in one step against every gateway's earlier
-- checks, in order; a bucket checked twice in one batch sees its first check.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local n = #ARGV / 3
local names = {}
for i = 1, n do names[i] = ARGV[3 * i - 2] end
local stored = redis.call('HMGET', KEYS[1], unpack(names))
local moved, waits = {}, {}
for i = 1, n do
  local name = names[i]
  local interval, tolerance = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local tat = moved[name] or tonumber(stored[i]) or now
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait > 0 then
    waits[i] = wait
  else
    moved[name] = tat + interval
    waits[i] = 0
  end
end
local updates = {}
for name, tat in pairs(moved) do
  updates[#updates + 1] = name
  updates[#updates + 1] = string.format('%d', tat)
end
if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
return waits
