-- cancel: end a request that has not been decided: its fan leaves the line, a sale
-- closed before its draw turns its pre-queue away, or the farm gives up on an entry
-- that keeps failing (dead letters).
--
-- KEYS[1] the request hash   KEYS[2] fans hash
-- ARGV[1] request id   ARGV[2] the state it ends in: "cancelled" or "rejected"
-- ARGV[3] the reason ("" for none)
--
-- Returns {1, state} when the request ended here, or {0, current state} when it was
-- already decided (a hold is ended with release.lua instead) or is unknown ("").
--
-- A pre-queued request stays a member of the pre-queue set: once the draw has
-- begun, the cohort must not change under a drawer that resumes (it would number
-- the others differently). The draw gives it a number and does not stream it. A
-- queued request's stream entry stays; the worker reports it as it stands.

local r = redis.call('HMGET', KEYS[1], 'state', 'fan')
if r[1] ~= 'queued' and r[1] ~= 'prequeue' then return {0, r[1] or ''} end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[3]) end
if redis.call('HGET', KEYS[2], r[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], r[2]) end
publish_changes(KEYS[1], {}, {ARGV[1]})
return {1, ARGV[2]}
