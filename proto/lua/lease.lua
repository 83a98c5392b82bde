-- lease: take, stamp or renew the right to drain an event's line (compare and set).
--
-- KEYS[1] the lease key
-- ARGV[1] the value the caller expects ("" : the lease must be free)
-- ARGV[2] the value to set   ARGV[3] lease time (ms)
--
-- Returns 1 when the lease now holds ARGV[2] for ARGV[3] ms, 0 when it holds
-- something else (another worker's lease, or the caller's lapsed and retaken).
--
-- A drainer takes the lease as "<token>#0", raises the event's fence epoch in
-- Postgres, then stamps the lease "<token>#<epoch>"; hold_batch.lua compares the
-- whole value. A drainer that stalled past its lease thus writes nothing to Redis
-- (its value is gone) and nothing to Postgres (its epoch is behind the fence).

local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
