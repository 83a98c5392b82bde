-- pay: a held request starts paying; its hold is extended by the paying grace.
--
-- KEYS[1] the request hash   KEYS[2] holds zset   KEYS[3] section holds zset
-- KEYS[4] seat hash          KEYS[5] the event's drain lease
-- ARGV[1] request id   ARGV[2] the paying fan's id   ARGV[3] now (ms)
-- ARGV[4] grace (ms): how far past its normal end the hold may run while paying
--
-- Returns {1, deadline (ms), seats} when the request is now paying, else
-- {0, why}: "not_found" (no such request, or another fan's), "restoring", "expired"
-- (its hold ran out, even if the sweep has not ended it yet), or the request's state
-- ("paying", "queued", "confirmed", ...).
--
-- Atomic with the sweep: a hold that is paying is ended by the sweep only after the
-- deadline, and the deadline is in the holds zset (and the section index, which the
-- wait-or-refuse decision reads) before this script returns. The normal end is kept
-- in `held_until` so a declined payment goes back to it.

local lease = redis.call('GET', KEYS[5]) or ''
if string.sub(lease, 1, 8) == 'restore-' then return {0, 'restoring'} end

local id, key = ARGV[1], KEYS[1]
local r = redis.call('HMGET', key, 'state', 'fan', 'seats', 'expires')
if not r[1] or r[2] ~= ARGV[2] then return {0, 'not_found'} end
if r[1] ~= 'held' then return {0, r[1]} end
local expires = tonumber(r[4])
if expires <= tonumber(ARGV[3]) then return {0, 'expired'} end

local deadline = expires + tonumber(ARGV[4])
redis.call('HSET', key, 'state', 'paying', 'held_until', expires, 'expires', deadline)
redis.call('ZADD', KEYS[2], 'XX', deadline, id)
local value = 'h:' .. id .. ':' .. deadline
local prefix = 'h:' .. id .. ':'
for seat in string.gmatch(r[3], '%S+') do
  redis.call('ZADD', KEYS[3], 'XX', deadline, string.match(seat, '^([^-]*)') .. '|' .. id)
  local current = redis.call('HGET', KEYS[4], seat)
  if current and string.sub(current, 1, #prefix) == prefix then
    redis.call('HSET', KEYS[4], seat, value)
  end
end
publish_changes(KEYS[1], {}, {id})
return {1, deadline, r[3]}
