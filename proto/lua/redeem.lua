-- Redeems a ticket at the door: the one place that decides, atomically, whether a
-- scan admits. Two scanners racing on one ticket are serialized here; the loser
-- is told who came first.
--
-- KEYS[1]  the event's door hash: ticket id -> `<in|out>|<entry no>|<scan id>|<unix ms>|<device>`
-- KEYS[2]  the event's door scans: scan id -> `<outcome>|<entry no>|<scan id>|<unix ms>|<device>`,
--          the answer each scan got (so a retry, even after other scans of the same
--          ticket, gets its first answer and changes nothing)
-- ARGV[1]  ticket id
-- ARGV[2]  `entry` or `exit`
-- ARGV[3]  scan id
-- ARGV[4]  when (unix ms)
-- ARGV[5]  device
-- ARGV[6]  the ledger's last word (`none`, `in|<n>` or `out|<n>`): used only when the
--          hash has no record of the ticket (Redis lost it), so a ticket the ledger
--          has inside is not admitted again.
--
-- Reply: {outcome, entry no, scan id, unix ms, device}, `outcome` one of `admitted`,
-- `already_in`, `exited`, `not_in`; for `already_in` the other fields are the entry
-- that refuses this one, otherwise this scan's. A scan sent again (same scan id)
-- gets its first answer.

local door, answers = KEYS[1], KEYS[2]
local ticket, direction, scan, at, device = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local answered = redis.call('HGET', answers, scan)
if answered then
  local outcome, n, s, a, d = string.match(answered, '^([%a_]+)|(%d+)|([^|]*)|(%d+)|(.*)$')
  return {outcome, tonumber(n), s, a, d}
end

local function answer(outcome, n, s, a, d)
  redis.call('HSET', answers, scan, outcome .. '|' .. n .. '|' .. s .. '|' .. a .. '|' .. d)
  redis.call('EXPIRE', answers, ARGV[7])
  redis.call('EXPIRE', door, ARGV[7])
  return {outcome, n, s, a, d}
end

local state, n, last_scan, last_at, last_device = 'none', 0, '', '0', ''
local record = redis.call('HGET', door, ticket)
if record then
  state, n, last_scan, last_at, last_device = string.match(record, '^(%a+)|(%d+)|([^|]*)|(%d+)|(.*)$')
  n = tonumber(n)
else
  local seeded, seeded_n = string.match(ARGV[6], '^(%a+)|(%d+)$')
  if seeded then
    state, n = seeded, tonumber(seeded_n)
  end
end

local function set(to)
  redis.call('HSET', door, ticket, to .. '|' .. n .. '|' .. scan .. '|' .. at .. '|' .. device)
end

if direction == 'entry' then
  if state == 'in' then
    return answer('already_in', n, last_scan, last_at, last_device)
  end
  n = n + 1
  set('in')
  return answer('admitted', n, scan, at, device)
end

if state ~= 'in' then
  return answer('not_in', n, scan, at, device)
end
set('out')
return answer('exited', n, scan, at, device)
