-- reclaim: the lease holder takes over every entry that other consumers of its
-- group left pending on a stream of its event, and forgets the consumers left with
-- nothing pending (a restarted worker comes back under a new name).
--
-- KEYS[1] the lease   KEYS[2] the stream (the line, or the changes stream)
-- ARGV[1] the caller's lease value   ARGV[2] consumer group   ARGV[3] consumer
--
-- Returns -1 when the lease holds another value (nothing moved), else how many
-- entries moved to the caller.
--
-- Atomicity: the lease check and the claim are one step. A drainer that has lost its
-- lease without knowing it yet (stopped, slow, or seized by a restore) would
-- otherwise take the entries its successor had read and not yet decided; the
-- successor, finding none of its own pending, would read newer entries first and
-- serve the line out of order. A claim counts no delivery (the next read from the
-- caller's pending list does); XCLAIM drops entries deleted while pending.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local stream, group, me = KEYS[2], ARGV[2], ARGV[3]
local summary = redis.pcall('XPENDING', stream, group)
if type(summary) == 'table' and summary.err then
  -- No stream or no group yet: nothing is pending.
  if string.find(summary.err, 'NOGROUP', 1, true) then return 0 end
  return redis.error_reply(summary.err)
end
local moved = 0
for _, owner in ipairs(summary[4] or {}) do
  local name = owner[1]
  if name ~= me then
    while true do
      local pending = redis.call('XPENDING', stream, group, '-', '+', 1000, name)
      if #pending == 0 then break end
      local claim = {'XCLAIM', stream, group, me, 0}
      for _, entry in ipairs(pending) do claim[#claim + 1] = entry[1] end
      claim[#claim + 1] = 'JUSTID'
      local claimed = redis.call(unpack(claim))
      moved = moved + #claimed
      -- Stop if nothing moved, so a list of only deleted entries cannot loop.
      if #claimed == 0 or #pending < 1000 then break end
    end
  end
end
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1] end
    if consumer[i] == 'pending' then pending = consumer[i + 1] end
  end
  if name ~= me and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
  end
end
return moved
