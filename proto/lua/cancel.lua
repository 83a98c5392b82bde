-- cancel: take a request that has not been decided out of the line.
--
-- KEYS[1] the request hash   KEYS[2] fans hash   KEYS[3] prequeue set
-- ARGV[1] request id
--
-- Returns {1, "cancelled"} or {0, current state} when the request was already
-- decided (a hold is ended with release.lua instead). The stream entry stays; the
-- worker reports it as cancelled without holding anything.

local r = redis.call('HMGET', KEYS[1], 'state', 'fan')
if r[1] ~= 'queued' and r[1] ~= 'prequeue' then return {0, r[1] or ''} end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[2], r[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], r[2]) end
return {1, 'cancelled'}
