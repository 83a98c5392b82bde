-- release: end a hold, returning its seats to the pool.
--
-- KEYS[1] seat hash   KEYS[2] counts hash   KEYS[3] holds zset   KEYS[4] fanseats hash
-- KEYS[5] rowfree hash   KEYS[6] fans hash   KEYS[7] the request hash
-- KEYS[8] changes stream: the ended hold, for the booking workers to carry into the
--         ledger (written with the release, so no crash between the two loses it)
-- KEYS[9] section holds zset ("<section>|<request>")   KEYS[10] the event's drain lease
-- ARGV[1] request id   ARGV[2] the state it ends in: "expired", "released" or "rejected"
-- ARGV[3] now (ms)     ARGV[4] "1" to release only a hold that has expired by now
-- ARGV[5] the drainer's lease value for a sweep, "" for a fan's release
--
-- Returns {1, state, seats freed} when the hold ended, {0, current state} when there
-- was no hold to end (already ended, not yet decided, not yet expired, or paying
-- and not a sweep),
-- {0, "lease_lost"} when a sweep's drainer no longer holds the lease, and
-- {0, "restoring"} while a restore holds it (its seat map and holds are being
-- rebuilt from the ledger; a release now would be undone by it).
--
-- Only seats still marked as this request's hold are freed, so a release can never
-- free a seat someone else holds or bought, and a second release frees nothing.

local lease = redis.call('GET', KEYS[10]) or ''
if ARGV[5] ~= '' and lease ~= ARGV[5] then return {0, 'lease_lost'} end
if string.sub(lease, 1, 8) == 'restore-' then return {0, 'restoring'} end

local id, key = ARGV[1], KEYS[7]
local r = redis.call('HMGET', key, 'state', 'fan', 'seats', 'expires')
-- A paying hold ends only by the sweep, once its paying deadline has passed (the
-- payment is then abandoned); a fan cannot release seats whose payment is in flight.
local sweep = ARGV[4] == '1'
if r[1] ~= 'held' and not (sweep and r[1] == 'paying') then
  if sweep then
    -- A due entry whose request holds nothing (it ended, was sold or requeued, or a
    -- restore over live keys left it): always due, it would fill the sweep's page
    -- for good and keep real holds from ending. It goes.
    redis.call('ZREM', KEYS[3], id)
    for seat in string.gmatch(r[3] or '', '%S+') do
      redis.call('ZREM', KEYS[9], string.match(seat, '^([^-]*)') .. '|' .. id)
    end
  end
  return {0, r[1] or ''}
end
if sweep and tonumber(r[4]) > tonumber(ARGV[3]) then return {0, r[1]} end

local prefix = 'h:' .. id .. ':'
local freed, count = 0, 0
local changed = {}
for seat in string.gmatch(r[3], '%S+') do
  count = count + 1
  redis.call('ZREM', KEYS[9], string.match(seat, '^([^-]*)') .. '|' .. id)
  local value = redis.call('HGET', KEYS[1], seat)
  if value and string.sub(value, 1, #prefix) == prefix then
    redis.call('HSET', KEYS[1], seat, 'a')
    redis.call('HINCRBY', KEYS[5], string.match(seat, '^(.*)%-%d+$'), 1)
    redis.call('HINCRBY', KEYS[5], 'sec:' .. string.match(seat, '^([^-]*)'), 1)
    freed = freed + 1
    changed[freed] = {seat, 'available'}
  end
end
redis.call('HINCRBY', KEYS[2], 'available', freed)
-- 0 - n, not -n: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
redis.call('HINCRBY', KEYS[2], 'held', 0 - freed)
redis.call('HINCRBY', KEYS[4], r[2], 0 - count)
redis.call('ZREM', KEYS[3], id)
redis.call('HSET', key, 'state', ARGV[2])
redis.call('HDEL', key, 'held_until')
if redis.call('HGET', KEYS[6], r[2]) == id then redis.call('HDEL', KEYS[6], r[2]) end
redis.call('XADD', KEYS[8], '*', 'r', id, 's', ARGV[2])
publish_changes(KEYS[2], changed, {id})
return {1, ARGV[2], freed}
