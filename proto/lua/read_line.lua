-- read_line: a drainer's read of a stream of its event, fenced by its lease.
--
-- KEYS[1] the lease   KEYS[2] the stream (the line, or the changes stream)
-- ARGV[1] the caller's lease value   ARGV[2] consumer group   ARGV[3] consumer
-- ARGV[4] COUNT   ARGV[5] read the caller's own pending entries after this id
-- ARGV[6] "1" to read new entries (">") when none of its own are pending
--
-- Returns {"lease_lost"} when the lease holds another value; otherwise
-- {"ok", last id of the stream ("0-0" if empty), XREADGROUP reply or false}.
--
-- Atomicity: the lease check and the read are one step, so a drainer that stalled
-- past its lease can never move entries into its own pending list after its
-- successor took over (the successor claims whatever was pending when it did).
-- The caller waits for new entries with a plain XREAD BLOCK from the returned id.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local function read(from)
  return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], from)
end
local reply = read(ARGV[5])
local own = false
if type(reply) == 'table' then
  for _, stream in ipairs(reply) do
    if #stream[2] > 0 then own = true end
  end
end
if not own and ARGV[6] == '1' then
  reply = read('>')
elseif not own then
  reply = false
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {'ok', last_id, reply}
