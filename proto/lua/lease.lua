-- lease: take or renew the right to drain an event's line.
--
-- KEYS[1] the lease key   ARGV[1] this worker's token   ARGV[2] lease time (ms)
--
-- Returns 1 when the caller holds the lease for ARGV[2] ms from now, 0 when another
-- worker does. One drainer per event keeps holds in queue-number order; a worker that
-- dies stops renewing and another takes over when the lease lapses.

local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
