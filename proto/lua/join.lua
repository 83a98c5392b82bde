-- join: put booking requests in an event's line, one or many per call, in order.
--
-- KEYS[1]  sale hash        KEYS[2]  fans hash        KEYS[3]  fanseats hash
-- KEYS[4]  prequeue set     KEYS[5]  latecomers list  KEYS[6]  next-number counter
-- KEYS[7]  request stream   KEYS[8]  seat hash        KEYS[9]  layout hash
-- KEYS[10] the event's drain lease (a restore holding it means: nobody joins now)
-- then for each request in turn: its request hash, and its idempotency key when it
--   has a fingerprint
-- ARGV[1]  now (ms)         ARGV[2]  number of requests
-- then, for each request in turn:
--   request id, fan id, fingerprint of the body ("" when no Idempotency-Key was sent),
--   kind ("seats" or "best"), quantity, section or "", price tier or "",
--   the number of seat ids that follow, the correlation id of the call ("" if none;
--   kept as the request's `x` and the stream entry's `x`), the seat ids (kind "seats")
--
-- Returns one reply per request, in order: {status, request_id (the earlier request a
-- replay, reused key or second request names; "" otherwise), queue_number (-1 if none
-- yet), state, served, detail}
-- status: "ok", "replay" (the Idempotency-Key was used for this very request before),
-- or a refusal: "sale_not_loaded", "sale_closed", "sold_out", "already_in_line",
-- "idempotency_key_reused", "over_limit" (detail: seats still allowed),
-- "unknown_seat" (detail: the seat id), "unknown_section", "unknown_price_tier",
-- "seat_map_not_loaded", "restoring" (the event is being restored from Postgres:
-- its line's numbers and order are not back yet).
--
-- Atomicity: each accepted request is numbered (or parked for the draw), streamed and
-- bound to its fan, and the requests are decided as if joined one after another in
-- ARGV order (a fan's second request in the same call finds the first). Every
-- decision is made before the first write, from reads and this call's own tables; a
-- refusal writes nothing. The request hash leaves out empty fields (section, tier,
-- seats), which its readers take as "".
--
-- Cost: a busy line sends a hundred joins per call, so the loop is kept lean: no
-- table per request, two writes per accepted request (its hash and its stream
-- entry), and one read and one write of the fans, the counter and the sets per call.

local now, count = ARGV[1], tonumber(ARGV[2])

local sale = redis.call('HMGET', KEYS[1], 'state', 'max_per_fan', 'served')
local state, max, served = sale[1], tonumber(sale[2]), tonumber(sale[3] or '0')
local refuse_all = nil
if string.sub(redis.call('GET', KEYS[10]) or '', 1, 8) == 'restore-' then
  refuse_all = 'restoring'
elseif not state then
  refuse_all = 'sale_not_loaded'
elseif state == 'closed' then
  refuse_all = 'sale_closed'
elseif state == 'sold_out' then
  refuse_all = 'sold_out'
elseif redis.call('EXISTS', KEYS[9]) == 0 or redis.call('EXISTS', KEYS[8]) == 0 then
  -- A layout without its seats (keys evicted one by one) is no map either: every
  -- named seat would read as unknown.
  refuse_all = 'seat_map_not_loaded'
end

-- Where each request's arguments and keys start.
local starts, key_starts, fans = {}, {}, {}
do
  local a, k = 3, 11
  for i = 1, count do
    starts[i], key_starts[i], fans[i] = a, k, ARGV[a + 1]
    k = k + (ARGV[a + 2] == '' and 1 or 2)
    a = a + 9 + tonumber(ARGV[a + 7])
  end
end

-- What the fans already have, read once for the call.
local live_of, held_of = {}, {}
if not refuse_all and count > 0 then
  local live = redis.call('HMGET', KEYS[2], unpack(fans))
  local held = redis.call('HMGET', KEYS[3], unpack(fans))
  for i = 1, count do
    live_of[fans[i]] = live[i] or false
    held_of[fans[i]] = tonumber(held[i] or '0')
  end
end

local idem_seen, known_names = {}, {}
local function known(field)
  local answer = known_names[field]
  if answer == nil then
    answer = redis.call('HEXISTS', KEYS[9], field) == 1
    known_names[field] = answer
  end
  return answer
end

-- Decide every request before writing anything.
local next_number = 0
if not refuse_all then next_number = tonumber(redis.call('GET', KEYS[6]) or '0') end
local first_number = next_number
local numbered = state ~= 'scheduled' and state ~= 'drawing'
local replies, accepted, numbers = {}, {}, {}
for i = 1, count do
  local a = starts[i]
  local id, fan, fingerprint = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local reply = nil
  if fingerprint ~= '' then
    local idem_key = KEYS[key_starts[i] + 1]
    local prior = idem_seen[idem_key]
    if prior == nil then prior = redis.call('GET', idem_key) end
    if prior then
      local sep = string.find(prior, '|', 1, true)
      local prior_id = string.sub(prior, sep + 1)
      if string.sub(prior, 1, sep - 1) ~= fingerprint then
        reply = {'idempotency_key_reused', prior_id, -1, '', 0, ''}
      else
        reply = {'replay', prior_id, -1, '', 0, ''}
      end
    end
  end
  if reply then
  elseif refuse_all then
    reply = {refuse_all, '', -1, '', 0, ''}
  elseif live_of[fan] then
    reply = {'already_in_line', live_of[fan], -1, '', 0, ''}
  elseif held_of[fan] + tonumber(ARGV[a + 4]) > max then
    reply = {'over_limit', '', -1, '', 0, tostring(math.max(max - held_of[fan], 0))}
  elseif ARGV[a + 5] ~= '' and not known('section:' .. ARGV[a + 5]) then
    reply = {'unknown_section', '', -1, '', 0, ARGV[a + 5]}
  elseif ARGV[a + 6] ~= '' and not known('tier:' .. ARGV[a + 6]) then
    reply = {'unknown_price_tier', '', -1, '', 0, ARGV[a + 6]}
  elseif ARGV[a + 3] == 'seats' then
    for s = a + 9, a + 8 + tonumber(ARGV[a + 7]) do
      if redis.call('HEXISTS', KEYS[8], ARGV[s]) == 0 then
        reply = {'unknown_seat', '', -1, '', 0, ARGV[s]}
        break
      end
    end
  end
  if not reply then
    local number = -1
    if numbered then
      next_number = next_number + 1
      number = next_number
    end
    live_of[fan] = id
    if fingerprint ~= '' then idem_seen[KEYS[key_starts[i] + 1]] = fingerprint .. '|' .. id end
    accepted[#accepted + 1] = i
    numbers[#numbers + 1] = number
    reply = {'ok', '', number, numbered and 'queued' or 'prequeue', served, ''}
  end
  replies[i] = reply
end

-- Decisions made; from here on only writes.
if #accepted > 0 then
  local request_state = numbered and 'queued' or 'prequeue'
  local parked, bindings = {}, {}
  for k, i in ipairs(accepted) do
    local a, number = starts[i], numbers[k]
    local id, fan, fingerprint = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local key = KEYS[key_starts[i]]
    local section, tier, seat_count = ARGV[a + 5], ARGV[a + 6], tonumber(ARGV[a + 7])
    local correlation = ARGV[a + 8]
    if section == '' and tier == '' and seat_count == 0 then
      if numbered then
        redis.call('HSET', key, 'fan', fan, 'kind', ARGV[a + 3], 'qty', ARGV[a + 4],
          'state', request_state, 'created', now, 'number', number, 'x', correlation)
      else
        redis.call('HSET', key, 'fan', fan, 'kind', ARGV[a + 3], 'qty', ARGV[a + 4],
          'state', request_state, 'created', now, 'x', correlation)
      end
    else
      local fields = {'fan', fan, 'kind', ARGV[a + 3], 'qty', ARGV[a + 4],
        'state', request_state, 'created', now, 'x', correlation}
      if section ~= '' then fields[#fields + 1] = 'section'; fields[#fields + 1] = section end
      if tier ~= '' then fields[#fields + 1] = 'tier'; fields[#fields + 1] = tier end
      if seat_count > 0 then
        fields[#fields + 1] = 'seats'
        fields[#fields + 1] = table.concat({unpack(ARGV, a + 9, a + 8 + seat_count)}, ' ')
      end
      if numbered then fields[#fields + 1] = 'number'; fields[#fields + 1] = number end
      redis.call('HSET', key, unpack(fields))
    end
    if numbered then
      redis.call('XADD', KEYS[7], '*', 'r', id, 'n', number, 'f', fan, 'x', correlation)
    else
      parked[#parked + 1] = id
    end
    bindings[#bindings + 1] = fan; bindings[#bindings + 1] = id
    if fingerprint ~= '' then
      redis.call('SET', KEYS[key_starts[i] + 1], fingerprint .. '|' .. id, 'EX', 86400)
    end
  end
  if #parked > 0 then
    if state == 'scheduled' then
      redis.call('SADD', KEYS[4], unpack(parked))
    else
      redis.call('RPUSH', KEYS[5], unpack(parked))
    end
  end
  if next_number > first_number then redis.call('SET', KEYS[6], next_number) end
  redis.call('HSET', KEYS[2], unpack(bindings))
end
return replies
