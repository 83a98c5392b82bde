-- hold_batch: decide a batch of queued requests, in queue order, holding seats
-- all-or-nothing for each.
--
-- KEYS[1] seat hash     KEYS[2] counts hash   KEYS[3] sale hash     KEYS[4] holds zset
-- KEYS[5] fanseats hash KEYS[6] layout hash   KEYS[8] fans hash
-- KEYS[7] rowfree hash: "<section>-<row>" and "sec:<section>" -> free seats
-- KEYS[9] lease         KEYS[10] section holds zset ("<section>|<request>" -> expiry)
-- KEYS[11..] the request hashes, in queue order
-- ARGV[1] now (ms)      ARGV[2] this drainer's lease value
-- ARGV[3] sold-out horizon (ms): while held seats a request could use expire within
--         it, that request (and the line behind it) waits for them
-- ARGV[4..] the request ids (aligned with KEYS[11..])
--
-- Returns {"lease_lost"} when another worker owns the event, else
-- {"ok", then for each request decided: id, state, seats ("a b c"), expires_ms, reason}.
-- A request already decided is reported as it stands (so a redelivered entry has the
-- effect of one). Processing stops at the first request that must wait for held seats
-- to come back; the requests after it are not reported and stay in the line.
--
-- Fairness: a request that cannot be served waits whenever seats *it* could use
-- (its named seats, its section, its tier's sections, or any seat) are held and
-- expire within the horizon, so a later fan with the same ask can never take seats
-- that came back after an earlier fan was refused.
-- An error reply ("ERR hold_batch: ...") when a request's hash cannot be decided (a
-- malformed hash): the requests before it are decided and written all the same.
--
-- Each request is checked completely before anything is written for it. The cost is
-- O(rows considered + seats of the chosen row) per request, never the whole seat map;
-- a row's seats are read from Redis at most once per call.

if redis.call('GET', KEYS[9]) ~= ARGV[2] then return {'lease_lost'} end

local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[3])
local seats_key, counts, sale, holds = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fanseats, layout, rowfree, fans = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local secholds = KEYS[10]
local settings = redis.call('HMGET', sale, 'max_per_fan', 'hold_ms', 'served', 'state')
-- A closed or sold-out sale still decides every request in its line: as refused.
local ending = settings[4] == 'closed' or settings[4] == 'sold_out'
if ending then ending = settings[4] == 'closed' and 'sale_closed' or 'sold_out' end
local max_per_fan, hold_ms = tonumber(settings[1]), tonumber(settings[2])
local served = tonumber(settings[3] or '0')
local out = {'ok'}
-- Seats held by this call, for the realtime feed.
local held_seats = {}
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

-- The row key of a seat id "section-row-number", and its number.
local function row_of(seat)
  return string.match(seat, '^(.*)%-%d+$')
end
local function number_of(seat)
  return tonumber(string.match(seat, '%-(%d+)$'))
end

-- The section's counter field of a seat id.
local function section_of(seat)
  return 'sec:' .. string.match(seat, '^([^-]*)')
end

-- Within one call, free-seat counters and row seat states are read from Redis once
-- and then kept in these tables as the script takes seats (nothing else writes them
-- while the script runs). The counters' changes are written back once, at the end.
local free_cache, free_delta = {}, {}
local function free_counts(fields)
  local missing = {}
  for _, f in ipairs(fields) do
    if free_cache[f] == nil then missing[#missing + 1] = f end
  end
  if #missing > 0 then
    local values = redis.call('HMGET', rowfree, unpack(missing))
    for i, f in ipairs(missing) do
      free_cache[f] = tonumber(values[i] or '0') + (free_delta[f] or 0)
    end
  end
  local out = {}
  for i, f in ipairs(fields) do out[i] = free_cache[f] end
  return out
end

-- A row's seats as {ids = {number -> seat id}, states = {number -> state}}.
local row_cache = {}
local function row_seats(key, size)
  local row = row_cache[key]
  if not row then
    local ids = {}
    for number = 1, size do ids[number] = key .. '-' .. number end
    row = {ids = ids, states = redis.call('HMGET', seats_key, unpack(ids))}
    row_cache[key] = row
  end
  return row
end

local function seat_state(seat)
  local row = row_cache[row_of(seat)]
  if row then return row.states[number_of(seat)] end
  return redis.call('HGET', seats_key, seat)
end

-- Takes seats for a hold: the seat states, and the row and section counters.
local function take(chosen, value)
  local args = {}
  for _, seat in ipairs(chosen) do
    args[#args + 1] = seat; args[#args + 1] = value
    local row = row_cache[row_of(seat)]
    if row then row.states[number_of(seat)] = value end
    for _, f in ipairs({row_of(seat), section_of(seat)}) do
      free_delta[f] = (free_delta[f] or 0) - 1
      if free_cache[f] then free_cache[f] = free_cache[f] - 1 end
    end
  end
  redis.call('HSET', seats_key, unpack(args))
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

-- Section lists by layout field ("_sections" or "tier:<tier>"), parsed once per call.
local section_lists = {}
local function sections_of(field)
  local list = section_lists[field]
  if not list then
    list = split(redis.call('HGET', layout, field), ',')
    section_lists[field] = list
  end
  return list
end

-- The first run of n free, adjacent seats, searching sections in order and rows
-- front to back; nil if there is none.
local function best_available(n, section, tier)
  local sections
  if section ~= '' then
    sections = {section}
  elseif tier ~= '' then
    sections = sections_of('tier:' .. tier)
  else
    sections = sections_of('_sections')
  end
  -- Sections and rows without n free seats are skipped by their counters.
  local fields = {}
  for i, sec in ipairs(sections) do fields[i] = 'sec:' .. sec end
  local section_free = free_counts(fields)
  for s, sec in ipairs(sections) do
    if section_free[s] >= n then
      local rows = section_rows(sec)
      local row_keys = {}
      for i, row in ipairs(rows) do row_keys[i] = row.key end
      local free = free_counts(row_keys)
      for i, row in ipairs(rows) do
        if free[i] >= n then
          local seats = row_seats(row.key, row.size)
          local run = 0
          for number = 1, row.size do
            if seats.states[number] == 'a' then
              run = run + 1
              if run == n then
                local chosen = {}
                for k = number - n + 1, number do chosen[#chosen + 1] = seats.ids[k] end
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

-- Whether held seats in one of `list`'s sections expire within the horizon. The
-- holds due within it are read once per call; when there are too many to look
-- through, the answer is yes: waiting a little is fair, refusing is not.
local due_sections = nil
local function returning_in_sections(list)
  if due_sections == nil then
    due_sections = {}
    local members = redis.call('ZRANGEBYSCORE', secholds, '-inf', now + horizon, 'LIMIT', 0, 1024)
    if #members >= 1024 then
      due_sections = true
    else
      for _, member in ipairs(members) do
        due_sections[string.match(member, '^(.*)|') or ''] = true
      end
    end
  end
  if due_sections == true then return true end
  for _, sec in ipairs(list) do
    if due_sections[sec] then return true end
  end
  return false
end

-- Whether seats this ask could use come back within the horizon.
local function returning_for(kind, section, tier, named)
  if kind == 'seats' then
    for _, seat in ipairs(split(named, ' ')) do
      local state = seat_state(seat)
      if state and string.sub(state, 1, 2) == 'h:' then
        local expires = tonumber(string.match(state, ':(%d+)$'))
        if expires and expires <= now + horizon then return true end
      end
    end
    return false
  elseif section ~= '' then
    return returning_in_sections({section})
  elseif tier ~= '' then
    return returning_in_sections(sections_of('tier:' .. tier))
  end
  if returning == nil then
    returning = redis.call('ZCOUNT', holds, '-inf', now + horizon) > 0
  end
  return returning
end

-- A request that raises an error (a malformed hash) ends the call, but only after the
-- counters below are written back for the requests decided before it.
local ok, failure = pcall(function()
  for i = 4, #ARGV do
    local id, key = ARGV[i], KEYS[i + 7]
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
        if returning_for(r[3], r[5] or '', r[6] or '', r[7]) then
          -- Seats come back soon: this fan and everyone behind waits for them.
          break
        end
        reason = 'sold_out'
      elseif tonumber(redis.call('HGET', fanseats, fan) or '0') + n > max_per_fan then
        reason = 'over_limit'
      elseif r[3] == 'seats' then
        chosen = split(r[7], ' ')
        for _, seat in ipairs(chosen) do
          if seat_state(seat) ~= 'a' then
            reason = 'seat_unavailable'
            chosen = nil
            break
          end
        end
      else
        chosen = best_available(n, r[5] or '', r[6] or '')
        if not chosen then reason = 'no_adjacent_seats' end
      end
      if (reason == 'seat_unavailable' or reason == 'no_adjacent_seats')
          and returning_for(r[3], r[5] or '', r[6] or '', r[7]) then
        -- Seats this ask could use come back soon: wait for them, as above.
        break
      end

      -- Decided; from here on only writes for this request.
      if chosen then
        local expires = now + hold_ms
        local value = 'h:' .. id .. ':' .. expires
        take(chosen, value)
        for _, seat in ipairs(chosen) do held_seats[#held_seats + 1] = {seat, 'held'} end
        available = available - #chosen
        held_now = held_now + #chosen
        redis.call('HINCRBY', fanseats, fan, #chosen)
        redis.call('ZADD', holds, expires, id)
        local sections_held = {}
        for _, seat in ipairs(chosen) do
          local sec = string.match(seat, '^([^-]*)')
          if not sections_held[sec] then
            sections_held[sec] = true
            redis.call('ZADD', secholds, expires, sec .. '|' .. id)
          end
        end
        -- A hold taken in this call comes back within the horizon too (when holds
        -- are shorter than it): the answers cached for this call must know.
        if expires <= now + horizon then
          returning = true
          if type(due_sections) == 'table' then
            for sec in pairs(sections_held) do due_sections[sec] = true end
          end
        end
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
end)
-- Written back whether or not a request failed: the requests before it are decided.
if served > tonumber(settings[3] or '0') then redis.call('HSET', sale, 'served', served) end
redis.call('HSET', counts, 'available', available, 'held', held_now)
for field, delta in pairs(free_delta) do
  if delta ~= 0 then redis.call('HINCRBY', rowfree, field, delta) end
end
publish_changes(counts, held_seats, {})
if not ok then
  -- The requests before the failing one are decided and written (and their counters
  -- above); the caller retries the rest one at a time to find the poisoned one.
  local message = type(failure) == 'table' and (failure.err or '?') or tostring(failure)
  return redis.error_reply('ERR hold_batch: ' .. message)
end
return out
