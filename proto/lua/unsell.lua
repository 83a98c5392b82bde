-- unsell: refunded seats of a confirmed request go back on sale, each once.
--
-- KEYS[1] seat hash   KEYS[2] counts hash   KEYS[3] fanseats hash   KEYS[4] rowfree hash
-- KEYS[5] the request hash   KEYS[6] the event's drain lease   KEYS[7] the sale hash
-- ARGV[1] request id   ARGV[2] the request's fan
-- ARGV[3] "1" when the sale may open again (its show has not begun), else "0"
-- ARGV[4..] the refunded seats
--
-- Returns {1, seats freed, the sale's state, reopened} (0 freed when every seat was
-- freed before: a retried release; reopened 1 when this call opened a sold-out sale),
-- {0, "restoring"} while a restore holds the lease (it rebuilds the seat map from the
-- ledger, where the seats are already free), or {0, "no_seat_map"} when the event's
-- keys are lost (the caller tries again once they are restored).
--
-- Only a seat still sold to this request (`s:<request>`) is freed, so a second
-- release frees nothing and a seat sold again since is never touched. A freed seat
-- is available to whoever comes next: the line's workers first, as they hold from
-- the free seats, then anyone on the public map. A sold-out sale whose seats come
-- back opens again, in the same step, so fans may join for them (the caller tells
-- the pages and puts the event back on the farm); once its show has begun it stays
-- as it is, and the seats are free on the map (as in the ledger) but not for sale.

local lease = redis.call('GET', KEYS[6]) or ''
if string.sub(lease, 1, 8) == 'restore-' then return {0, 'restoring'} end
-- The event's keys are lost: nothing can be freed now; the restore that brings them
-- back rebuilds the seats from the ledger, and a later call finds them.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'no_seat_map'} end

local id, sold = ARGV[1], 's:' .. ARGV[1]
local freed, changed, gone = 0, {}, {}
for i = 4, #ARGV do
  local seat = ARGV[i]
  if redis.call('HGET', KEYS[1], seat) == sold then
    redis.call('HSET', KEYS[1], seat, 'a')
    redis.call('HINCRBY', KEYS[4], string.match(seat, '^(.*)%-%d+$'), 1)
    redis.call('HINCRBY', KEYS[4], 'sec:' .. string.match(seat, '^([^-]*)'), 1)
    freed = freed + 1
    changed[freed] = {seat, 'available'}
    gone[seat] = true
  end
end
if freed == 0 then return {1, 0, redis.call('HGET', KEYS[7], 'state') or '', 0} end
redis.call('HINCRBY', KEYS[2], 'available', freed)
redis.call('HINCRBY', KEYS[2], 'sold', 0 - freed)
redis.call('HINCRBY', KEYS[3], ARGV[2], 0 - freed)
-- The request keeps the seats it still has.
local kept = {}
for seat in string.gmatch(redis.call('HGET', KEYS[5], 'seats') or '', '%S+') do
  if not gone[seat] then kept[#kept + 1] = seat end
end
redis.call('HSET', KEYS[5], 'seats', table.concat(kept, ' '))
publish_changes(KEYS[2], changed, {})
local state, reopened = redis.call('HGET', KEYS[7], 'state') or '', 0
if state == 'sold_out' and ARGV[3] == '1' then
  state, reopened = 'open', 1
  redis.call('HSET', KEYS[7], 'state', state)
end
return {1, freed, state, reopened}
