-- changes (prepended to every script by proto::scripts): the feed of the realtime
-- service, published from inside the script so that it is atomic with the change.
--
-- A script that changes seats or requests calls publish_changes once, after its
-- writes. When seats changed, the seat map's `version` (in the counts hash) goes up
-- by one in the same step, so versions reach a listener in change order and a gap
-- tells it that it missed a message. The message, on the event's live channel
-- (sharded pub/sub: it stays on the node owning the event's slot):
--   {"type":"changes","version":V,"seats":[{"seat_id":..,"state":..}],"request_ids":[..]}
-- (`version` and `seats` only when seats changed, `request_ids` only when given).
-- Pub/sub is fire-and-forget: listeners repair what they miss from the state itself.

-- The event's live channel, spelled from any of its keys (`<p>:{ev:<id>}:<name>` →
-- `<p>:{ev:<id>}:live`; proto::keys tests the spelling against Keys::live).
local function live_channel(key)
  return string.match(key, '^(.-{ev:[^}]*}:)') .. 'live'
end

-- counts: the event's counts hash. seats: a list of {seat id, 'available'|'held'|'sold'}.
-- request_ids: a list of request ids whose state changed (may be empty).
local function publish_changes(counts, seats, request_ids)
  if #seats == 0 and #request_ids == 0 then return end
  local parts = {'{"type":"changes"'}
  if #seats > 0 then
    local version = redis.call('HINCRBY', counts, 'version', 1)
    local items = {}
    for i, change in ipairs(seats) do
      items[i] = '{"seat_id":' .. cjson.encode(change[1]) .. ',"state":"' .. change[2] .. '"}'
    end
    -- %d, not tostring: a large version would print in exponent notation.
    parts[#parts + 1] = ',"version":' .. string.format('%d', version)
    parts[#parts + 1] = ',"seats":[' .. table.concat(items, ',') .. ']'
  end
  if #request_ids > 0 then
    local ids = {}
    for i, id in ipairs(request_ids) do ids[i] = cjson.encode(id) end
    parts[#parts + 1] = ',"request_ids":[' .. table.concat(ids, ',') .. ']'
  end
  parts[#parts + 1] = '}'
  redis.call('SPUBLISH', live_channel(counts), table.concat(parts))
end

