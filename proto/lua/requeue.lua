-- requeue: undo a hold the ledger refused, give its seats to their ledger owners,
-- and put the request back in line to be decided again.
--
-- KEYS[1] seat hash   KEYS[2] counts hash   KEYS[3] holds zset   KEYS[4] fanseats hash
-- KEYS[5] rowfree hash   KEYS[6] fans hash   KEYS[7] the refused request's hash
-- KEYS[8] section holds zset ("<section>|<request>")
-- KEYS[9..] the ledger owners' request hashes (aligned with the owners in ARGV)
-- ARGV[1] the refused request's id
-- ARGV[2] the number of owners, then per owner: id, fan, state ("held", "paying"
--         or "sold"), expiry (ms, "0" when sold), its seats ("a b c") as the ledger
--         has them
--
-- Returns the number of seats given to their ledger owners.
--
-- Why: when Postgres refuses a claim, Redis believed the seat free while the ledger
-- says another request owns it. Freeing the seat would hand it to the next fan,
-- who would be refused too, and the next: instead Redis takes the ledger's word, the
-- owner's hold is restored (so it still expires), and the refused request is
-- decided again against what is truly free. Counters move with every seat whose
-- class (available, held, sold) changes. Nothing is read after the first write.

local seats, counts, holds, fanseats, rowfree, fans = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local secholds = KEYS[8]
local id, key = ARGV[1], KEYS[7]

local function class(value)
  if value == false or value == nil then return nil end
  local c = string.sub(value, 1, 1)
  if c == 'a' then return 'available' end
  if c == 'h' then return 'held' end
  if c == 's' then return 'sold' end
  return nil
end

local function row_of(seat) return string.match(seat, '^(.*)%-%d+$') end
local function section_of(seat) return 'sec:' .. string.match(seat, '^([^-]*)') end

-- Every seat write goes through here, keeping the counters in step and noting the
-- change for the realtime feed.
local changed, touched = {}, {}
local function set_seat(seat, value)
  local before = class(redis.call('HGET', seats, seat))
  local after = class(value)
  redis.call('HSET', seats, seat, value)
  if before == after then return end
  changed[#changed + 1] = {seat, after}
  if before then redis.call('HINCRBY', counts, before, -1) end
  if after then redis.call('HINCRBY', counts, after, 1) end
  if before == 'available' then
    redis.call('HINCRBY', rowfree, row_of(seat), -1)
    redis.call('HINCRBY', rowfree, section_of(seat), -1)
  elseif after == 'available' then
    redis.call('HINCRBY', rowfree, row_of(seat), 1)
    redis.call('HINCRBY', rowfree, section_of(seat), 1)
  end
end

local r = redis.call('HMGET', key, 'state', 'fan', 'seats', 'kind')
local given = 0
local owners = tonumber(ARGV[2])
local a = 3
for o = 1, owners do
  local owner, fan, state, expires, owned = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local okey = KEYS[8 + o]
  a = a + 5
  local value
  if state == 'sold' then value = 's:' .. owner else value = 'h:' .. owner .. ':' .. expires end
  local known = redis.call('HGET', okey, 'state')
  if known ~= 'held' and known ~= 'paying' and known ~= 'confirmed' then
    -- Redis lost or never had the owner's hold: restore it as the ledger has it.
    local count = 0
    for seat in string.gmatch(owned, '%S+') do
      set_seat(seat, value)
      count = count + 1
      given = given + 1
    end
    local restored = 'held'
    if state == 'sold' then restored = 'confirmed' elseif state == 'paying' then restored = 'paying' end
    redis.call('HSET', okey, 'state', restored, 'fan', fan, 'seats', owned, 'expires', expires)
    touched[#touched + 1] = owner
    redis.call('HINCRBY', fanseats, fan, count)
    if state ~= 'sold' then
      redis.call('ZADD', holds, tonumber(expires), owner)
      for seat in string.gmatch(owned, '%S+') do
        redis.call('ZADD', secholds, tonumber(expires), string.match(seat, '^([^-]*)') .. '|' .. owner)
      end
    end
  else
    for seat in string.gmatch(owned, '%S+') do
      local current = redis.call('HGET', seats, seat)
      if current ~= value then set_seat(seat, value); given = given + 1 end
    end
  end
end

-- The refused request: its seats that are still its hold return to the pool, and it
-- goes back in line.
-- A refused hold whose fan already started paying is undone the same way: the
-- checkout finds the ledger without the hold and gives up without charging.
if r[1] == 'held' or r[1] == 'paying' then
  local prefix = 'h:' .. id .. ':'
  local count = 0
  for seat in string.gmatch(r[3] or '', '%S+') do
    count = count + 1
    redis.call('ZREM', secholds, string.match(seat, '^([^-]*)') .. '|' .. id)
    local value = redis.call('HGET', seats, seat)
    if value and string.sub(value, 1, #prefix) == prefix then set_seat(seat, 'a') end
  end
  redis.call('HINCRBY', fanseats, r[2], 0 - count)
  redis.call('ZREM', holds, id)
  redis.call('HSET', key, 'state', 'queued')
  redis.call('HDEL', key, 'expires', 'held_until')
  -- A best-available ask is decided afresh; named seats stay the ask.
  if r[4] ~= 'seats' then redis.call('HDEL', key, 'seats') end
  redis.call('HSET', fans, r[2], id)
  touched[#touched + 1] = id
end
publish_changes(counts, changed, touched)
return given
