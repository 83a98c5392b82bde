-- commit_seat_map: swap a fully written staging seat map in as the event's seat map.
--
-- KEYS[1]  staging hash   (seat id -> encoded state), written by the rebuild
-- KEYS[2]  seat hash      (the live seat map)
-- KEYS[3]  counts hash    (available, held, sold, generation)
-- ARGV[1]  mode: "force" replaces any live map; "if_absent" only loads a map
--          into an event that has none (after a Redis restart or eviction)
-- ARGV[2]  generation: an opaque id of this rebuild
-- ARGV[3]  available count, ARGV[4] held count, ARGV[5] sold count
--
-- Returns 1 when the staging map became the live map, 0 when "if_absent" found
-- a live map already (the staging map is then deleted).
--
-- Atomicity: readers see either the old map with its counts or the new map with
-- its counts, never a mix. All three keys share the event's hash tag.

local staging, seats, counts = KEYS[1], KEYS[2], KEYS[3]
local mode, generation = ARGV[1], ARGV[2]

if mode ~= 'force' and mode ~= 'if_absent' then
  return redis.error_reply('ERR commit_seat_map: unknown mode ' .. tostring(mode))
end
if redis.call('EXISTS', staging) == 0 then
  return redis.error_reply('ERR commit_seat_map: staging map is missing or expired')
end
if mode == 'if_absent' and redis.call('HEXISTS', counts, 'generation') == 1 then
  redis.call('DEL', staging)
  return 0
end

-- Checks done; from here on only writes.
redis.call('RENAME', staging, seats)
redis.call('PERSIST', seats)
redis.call('DEL', counts)
redis.call('HSET', counts,
  'available', ARGV[3], 'held', ARGV[4], 'sold', ARGV[5], 'generation', generation)
return 1
