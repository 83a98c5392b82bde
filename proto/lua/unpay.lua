-- unpay: a payment was declined; the paying request is held again until its
-- normal end, so the fan can try another card while the hold lasts.
--
-- KEYS[1] the request hash   KEYS[2] holds zset   KEYS[3] section holds zset
-- KEYS[4] seat hash          KEYS[5] the event's drain lease
-- ARGV[1] request id
--
-- Returns {1, held_until (ms)} when the request is held again (also when it already
-- was: a retried settlement), {0, state} when it was not paying (already ended by
-- the sweep, or confirmed). A normal end already past is put back as it is: the next
-- sweep ends the hold. {0, "restoring"} while a restore holds the lease (it is
-- rewriting the hold from the ledger; the decline is settled again afterwards).

local lease = redis.call('GET', KEYS[5]) or ''
if string.sub(lease, 1, 8) == 'restore-' then return {0, 'restoring'} end

local id, key = ARGV[1], KEYS[1]
local r = redis.call('HMGET', key, 'state', 'seats', 'expires', 'held_until')
if r[1] == 'held' then return {1, tonumber(r[3])} end
if r[1] ~= 'paying' then return {0, r[1] or ''} end
local until_ms = tonumber(r[4] or r[3])
redis.call('HSET', key, 'state', 'held', 'expires', until_ms)
redis.call('HDEL', key, 'held_until')
redis.call('ZADD', KEYS[2], 'XX', until_ms, id)
local value = 'h:' .. id .. ':' .. until_ms
local prefix = 'h:' .. id .. ':'
for seat in string.gmatch(r[2], '%S+') do
  redis.call('ZADD', KEYS[3], 'XX', until_ms, string.match(seat, '^([^-]*)') .. '|' .. id)
  local current = redis.call('HGET', KEYS[4], seat)
  if current and string.sub(current, 1, #prefix) == prefix then
    redis.call('HSET', KEYS[4], seat, value)
  end
end
publish_changes(KEYS[1], {}, {id})
return {1, until_ms}
