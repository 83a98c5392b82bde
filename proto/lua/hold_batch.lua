-- hold_batch: decide a batch of queued requests, in queue order, holding seats
-- all-or-nothing for each.
--
-- KEYS[1] seat hash     KEYS[2] counts hash   KEYS[3] sale hash     KEYS[4] holds zset
-- KEYS[5] fanseats hash KEYS[6] layout hash   KEYS[8] fans hash
-- KEYS[7] rowfree hash: "<section>-<row>" and "sec:<section>" -> free seats
-- KEYS[9] lease         KEYS[10..] the request hashes, in queue order
-- ARGV[1] now (ms)      ARGV[2] this worker's lease token
-- ARGV[3] sold-out horizon (ms): while held seats expire within it, fans wait for them
-- ARGV[4..] the request ids (aligned with KEYS[10..])
--
-- Returns {"lease_lost"} when another worker owns the event, else
-- {"ok", then for each request decided: id, state, seats ("a b c"), expires_ms, reason}.
-- A request already decided is reported as it stands (so a redelivered entry has the
-- effect of one). Processing stops at the first request that must wait for held seats
-- to come back; the requests after it are not reported and stay in the line.
--
-- Each request is checked completely before anything is written for it. The cost is
-- O(rows considered + seats of the chosen row) per request, never the whole seat map.

if redis.call('GET', KEYS[9]) ~= ARGV[2] then return {'lease_lost'} end

local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[3])
local seats_key, counts, sale, holds = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fanseats, layout, rowfree, fans = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local settings = redis.call('HMGET', sale, 'max_per_fan', 'hold_ms', 'served', 'state')
-- A closed or sold-out sale still decides every request in its line: as refused.
local ending = settings[4] == 'closed' or settings[4] == 'sold_out'
if ending then ending = settings[4] == 'closed' and 'sale_closed' or 'sold_out' end
local max_per_fan, hold_ms = tonumber(settings[1]), tonumber(settings[2])
local served = tonumber(settings[3] or '0')
local out = {'ok'}
-- Counters live in locals for the call and are written back once at the end; whether
-- held seats come back within the horizon is asked at most once.
local count_fields = redis.call('HMGET', counts, 'available', 'held')
local available = tonumber(count_fields[1] or '0')
local held_now = tonumber(count_fields[2] or '0')
local returning = nil

local function split(s, sep)
  local parts = {}
  if not s or s == '' then return parts end
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do parts[#parts + 1] = part end
  return parts
end

-- The row key of a seat id "section-row-number".
local function row_of(seat)
  return string.match(seat, '^(.*)%-%d+$')
end

-- The section's counter field of a seat id.
local function section_of(seat)
  return 'sec:' .. string.match(seat, '^([^-]*)')
end

-- A section's rows front to back as {key = "section-row", size = seats}, parsed once
-- per call: the layout does not change while a script runs.
local parsed_sections = {}
local function section_rows(sec)
  local rows = parsed_sections[sec]
  if not rows then
    rows = {}
    for _, row in ipairs(split(redis.call('HGET', layout, 'section:' .. sec), ',')) do
      rows[#rows + 1] = {key = sec .. '-' .. string.match(row, '^(.*):'), size = tonumber(string.match(row, ':(%d+)$'))}
    end
    parsed_sections[sec] = rows
  end
  return rows
end

-- The first run of n free, adjacent seats, searching sections in order and rows
-- front to back; nil if there is none.
local function best_available(n, section, tier)
  local sections
  if section ~= '' then
    sections = {section}
  elseif tier ~= '' then
    sections = split(redis.call('HGET', layout, 'tier:' .. tier), ',')
  else
    sections = split(redis.call('HGET', layout, '_sections'), ',')
  end
  -- Sections without n free seats are skipped with one lookup for all of them.
  local section_free = {}
  if #sections > 0 then
    local fields = {}
    for i, sec in ipairs(sections) do fields[i] = 'sec:' .. sec end
    section_free = redis.call('HMGET', rowfree, unpack(fields))
  end
  for s, sec in ipairs(sections) do
    local rows = {}
    if tonumber(section_free[s] or '0') >= n then rows = section_rows(sec) end
    if #rows > 0 then
      local row_keys = {}
      for i, row in ipairs(rows) do row_keys[i] = row.key end
      local free = redis.call('HMGET', rowfree, unpack(row_keys))
      for i, row in ipairs(rows) do
        if tonumber(free[i] or '0') >= n then
          local size = row.size
          local ids = {}
          for number = 1, size do ids[number] = row.key .. '-' .. number end
          local states = redis.call('HMGET', seats_key, unpack(ids))
          local run = 0
          for number = 1, size do
            if states[number] == 'a' then
              run = run + 1
              if run == n then
                local chosen = {}
                for k = number - n + 1, number do chosen[#chosen + 1] = ids[k] end
                return chosen
              end
            else
              run = 0
            end
          end
        end
      end
    end
  end
  return nil
end

for i = 4, #ARGV do
  local id, key = ARGV[i], KEYS[i + 6]
  local r = redis.call('HMGET', key, 'state', 'fan', 'kind', 'qty', 'section', 'tier', 'seats',
    'number', 'expires', 'reason')
  local state = r[1]
  if not state then
    out[#out + 1] = id; out[#out + 1] = 'missing'; out[#out + 1] = ''
    out[#out + 1] = 0; out[#out + 1] = 'request_not_found'
  elseif state ~= 'queued' then
    out[#out + 1] = id; out[#out + 1] = state; out[#out + 1] = r[7] or ''
    out[#out + 1] = tonumber(r[9] or '0'); out[#out + 1] = r[10] or ''
  else
    local fan, n = r[2], tonumber(r[4])
    local number = tonumber(r[8])
    local reason, chosen = nil, nil
    if ending then
      reason = ending
    elseif available < n then
      if returning == nil then
        returning = redis.call('ZCOUNT', holds, '-inf', now + horizon) > 0
      end
      if returning then
        -- Seats come back soon: this fan and everyone behind waits for them.
        break
      end
      reason = 'sold_out'
    elseif tonumber(redis.call('HGET', fanseats, fan) or '0') + n > max_per_fan then
      reason = 'over_limit'
    elseif r[3] == 'seats' then
      chosen = split(r[7], ' ')
      for _, seat in ipairs(chosen) do
        if redis.call('HGET', seats_key, seat) ~= 'a' then
          reason = 'seat_unavailable'
          chosen = nil
          break
        end
      end
    else
      chosen = best_available(n, r[5] or '', r[6] or '')
      if not chosen then reason = 'no_adjacent_seats' end
    end

    -- Decided; from here on only writes for this request.
    if chosen then
      local expires = now + hold_ms
      local value = 'h:' .. id .. ':' .. expires
      for _, seat in ipairs(chosen) do
        redis.call('HSET', seats_key, seat, value)
        redis.call('HINCRBY', rowfree, row_of(seat), -1)
        redis.call('HINCRBY', rowfree, section_of(seat), -1)
      end
      available = available - #chosen
      held_now = held_now + #chosen
      redis.call('HINCRBY', fanseats, fan, #chosen)
      redis.call('ZADD', holds, expires, id)
      local seat_list = table.concat(chosen, ' ')
      redis.call('HSET', key, 'state', 'held', 'seats', seat_list, 'expires', expires)
      out[#out + 1] = id; out[#out + 1] = 'held'; out[#out + 1] = seat_list
      out[#out + 1] = expires; out[#out + 1] = ''
    else
      redis.call('HSET', key, 'state', 'rejected', 'reason', reason)
      if redis.call('HGET', fans, fan) == id then redis.call('HDEL', fans, fan) end
      out[#out + 1] = id; out[#out + 1] = 'rejected'; out[#out + 1] = r[7] or ''
      out[#out + 1] = 0; out[#out + 1] = reason
    end
    if number and number > served then served = number end
  end
end
if served > tonumber(settings[3] or '0') then redis.call('HSET', sale, 'served', served) end
redis.call('HSET', counts, 'available', available, 'held', held_now)
return out
