-- commit_seat_map: swap a fully written staging seat map in as the event's seat map.
--
-- KEYS[1]  staging seat hash   (seat id -> encoded state), written by the rebuild
-- KEYS[2]  seat hash           (the live seat map)
-- KEYS[3]  counts hash         (available, held, sold, generation)
-- KEYS[4]  staging rowfree     KEYS[5]  rowfree hash (row -> free seats)
-- KEYS[6]  staging layout      KEYS[7]  layout hash (sections, rows, tiers)
-- ARGV[1]  mode: "force" replaces any live map; "if_absent" only loads a map
--          into an event that has none (after a Redis restart or eviction; a map
--          without its layout or its seats counts as none)
-- ARGV[2]  generation: an opaque id of this rebuild
-- ARGV[3]  available count, ARGV[4] held count, ARGV[5] sold count
--
-- Returns 1 when the staging map became the live map, 0 when "if_absent" found
-- a live map already (the staging keys are then deleted).
--
-- Atomicity: readers see either the old map with its counts or the new map with
-- its counts, never a mix. All keys share the event's hash tag.

local mode, generation = ARGV[1], ARGV[2]

if mode ~= 'force' and mode ~= 'if_absent' then
  return redis.error_reply('ERR commit_seat_map: unknown mode ' .. tostring(mode))
end
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[6]) == 0 then
  return redis.error_reply('ERR commit_seat_map: staging map is missing or expired')
end
if mode == 'if_absent' and redis.call('HEXISTS', KEYS[3], 'generation') == 1
    and redis.call('EXISTS', KEYS[7]) == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[6])
  return 0
end

-- Checks done; from here on only writes.
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[5])
  redis.call('PERSIST', KEYS[5])
else
  -- Every row is full: no row has a free seat to count.
  redis.call('DEL', KEYS[5])
end
redis.call('RENAME', KEYS[6], KEYS[7])
redis.call('PERSIST', KEYS[7])
-- The seat map's version keeps growing across the swap, even when Redis lost the old
-- one: it starts again from the clock (microsecond-sized steps per second leave room
-- for a million changes a second). Listeners are told to fetch the whole map again.
local old_version = tonumber(redis.call('HGET', KEYS[3], 'version') or '0')
local clock = redis.call('TIME')
local version = math.max(old_version + 1, tonumber(clock[1]) * 1000000)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3],
  'available', ARGV[3], 'held', ARGV[4], 'sold', ARGV[5], 'generation', generation,
  'version', string.format('%d', version))
redis.call('SPUBLISH', live_channel(KEYS[3]),
  '{"type":"changes","reset":true,"version":' .. string.format('%d', version) .. '}')
return 1
