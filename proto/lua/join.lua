-- join: put one booking request in an event's line.
--
-- KEYS[1]  sale hash        KEYS[2]  fans hash        KEYS[3]  fanseats hash
-- KEYS[4]  the new request's hash                     KEYS[5]  idempotency key
-- KEYS[6]  prequeue set     KEYS[7]  latecomers list  KEYS[8]  next-number counter
-- KEYS[9]  request stream   KEYS[10] seat hash        KEYS[11] layout hash
-- ARGV[1]  request id       ARGV[2]  fan id
-- ARGV[3]  fingerprint of the request body, "" when no Idempotency-Key was sent
-- ARGV[4]  now (ms)         ARGV[5]  kind: "seats" or "best"
-- ARGV[6]  quantity         ARGV[7]  section or ""   ARGV[8]  price tier or ""
-- ARGV[9..] seat ids, for kind "seats"
--
-- Returns {status, request_id, queue_number (-1 if none yet), state, served, detail}
-- status: "ok", "replay" (the Idempotency-Key was used for this very request before),
-- or a refusal: "sale_not_loaded", "sale_closed", "sold_out", "already_in_line",
-- "idempotency_key_reused", "over_limit" (detail: seats still allowed),
-- "unknown_seat" (detail: the seat id), "unknown_section", "unknown_price_tier",
-- "seat_map_not_loaded".
--
-- Atomicity: the request is numbered (or parked for the draw), streamed and bound
-- to its fan in one step; a refusal writes nothing.

local id, fan, fingerprint = ARGV[1], ARGV[2], ARGV[3]

if fingerprint ~= '' then
  local prior = redis.call('GET', KEYS[5])
  if prior then
    local sep = string.find(prior, '|', 1, true)
    local prior_id = string.sub(prior, sep + 1)
    if string.sub(prior, 1, sep - 1) ~= fingerprint then
      return {'idempotency_key_reused', prior_id, -1, '', 0, ''}
    end
    return {'replay', prior_id, -1, '', 0, ''}
  end
end

local sale = redis.call('HMGET', KEYS[1], 'state', 'max_per_fan', 'served')
local state = sale[1]
if not state then return {'sale_not_loaded', '', -1, '', 0, ''} end
if state == 'closed' then return {'sale_closed', '', -1, '', 0, ''} end
if state == 'sold_out' then return {'sold_out', '', -1, '', 0, ''} end

local live = redis.call('HGET', KEYS[2], fan)
if live then return {'already_in_line', live, -1, '', 0, ''} end

local quantity = tonumber(ARGV[6])
local have = tonumber(redis.call('HGET', KEYS[3], fan) or '0')
local max = tonumber(sale[2])
if have + quantity > max then
  return {'over_limit', '', -1, '', 0, tostring(math.max(max - have, 0))}
end

if redis.call('EXISTS', KEYS[11]) == 0 then return {'seat_map_not_loaded', '', -1, '', 0, ''} end
if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[11], 'section:' .. ARGV[7]) == 0 then
  return {'unknown_section', '', -1, '', 0, ARGV[7]}
end
if ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[11], 'tier:' .. ARGV[8]) == 0 then
  return {'unknown_price_tier', '', -1, '', 0, ARGV[8]}
end

local seats = {}
if ARGV[5] == 'seats' then
  for i = 9, #ARGV do
    if redis.call('HEXISTS', KEYS[10], ARGV[i]) == 0 then
      return {'unknown_seat', '', -1, '', 0, ARGV[i]}
    end
    seats[#seats + 1] = ARGV[i]
  end
end

-- Checks done; from here on only writes.
local number, request_state = -1, 'prequeue'
if state == 'scheduled' then
  redis.call('SADD', KEYS[6], id)
elseif state == 'drawing' then
  redis.call('RPUSH', KEYS[7], id)
else
  number = redis.call('INCR', KEYS[8])
  request_state = 'queued'
end
local fields = {'fan', fan, 'kind', ARGV[5], 'qty', ARGV[6], 'section', ARGV[7], 'tier', ARGV[8],
  'seats', table.concat(seats, ' '), 'state', request_state, 'created', ARGV[4]}
if number > 0 then
  fields[#fields + 1] = 'number'; fields[#fields + 1] = number
end
redis.call('HSET', KEYS[4], unpack(fields))
if number > 0 then
  redis.call('XADD', KEYS[9], '*', 'r', id, 'n', number, 'f', fan)
end
redis.call('HSET', KEYS[2], fan, id)
if fingerprint ~= '' then
  redis.call('SET', KEYS[5], fingerprint .. '|' .. id, 'EX', 86400)
end
return {'ok', id, number, request_state, tonumber(sale[3] or '0'), ''}
