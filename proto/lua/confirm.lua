-- confirm: a paying request's payment succeeded; its held seats become sold.
--
-- KEYS[1] seat hash   KEYS[2] counts hash   KEYS[3] holds zset
-- KEYS[4] section holds zset   KEYS[5] fans hash   KEYS[6] the request hash
-- KEYS[7] the event's drain lease
-- ARGV[1] request id   ARGV[2] now (ms)
--
-- Returns {1, seats} when the request is confirmed (also when it already was: a
-- retried settlement), else {0, why}: "restoring", "expired" (the paying deadline
-- passed: the payment is abandoned and must be refunded, even if the sweep has not
-- ended the hold yet), "seat_lost" (a seat is no longer this request's hold: nothing
-- is written), or the request's state.
--
-- Atomic with the sweep, which ends a paying hold only after its deadline: either
-- the seats are sold here, or the hold ends there, never both. Every seat is
-- checked before the first write.

local lease = redis.call('GET', KEYS[7]) or ''
if string.sub(lease, 1, 8) == 'restore-' then return {0, 'restoring'} end

local id, key = ARGV[1], KEYS[6]
local r = redis.call('HMGET', key, 'state', 'fan', 'seats', 'expires')
if r[1] == 'confirmed' then return {1, r[3]} end
if r[1] ~= 'paying' then return {0, r[1] or ''} end
if tonumber(r[4]) <= tonumber(ARGV[2]) then return {0, 'expired'} end

local prefix = 'h:' .. id .. ':'
local list = {}
for seat in string.gmatch(r[3], '%S+') do
  local value = redis.call('HGET', KEYS[1], seat)
  if not value or string.sub(value, 1, #prefix) ~= prefix then return {0, 'seat_lost'} end
  list[#list + 1] = seat
end

for _, seat in ipairs(list) do
  redis.call('HSET', KEYS[1], seat, 's:' .. id)
  redis.call('ZREM', KEYS[4], string.match(seat, '^([^-]*)') .. '|' .. id)
end
redis.call('HINCRBY', KEYS[2], 'held', 0 - #list)
redis.call('HINCRBY', KEYS[2], 'sold', #list)
redis.call('ZREM', KEYS[3], id)
redis.call('HSET', key, 'state', 'confirmed')
redis.call('HDEL', key, 'held_until')
-- The fan's live request has ended; the sold seats still count against the cap.
if redis.call('HGET', KEYS[5], r[2]) == id then redis.call('HDEL', KEYS[5], r[2]) end
local changed = {}
for i, seat in ipairs(list) do changed[i] = {seat, 'sold'} end
publish_changes(KEYS[2], changed, {id})
return {1, r[3]}
