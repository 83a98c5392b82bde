-- draw: number one chunk of the drawn pre-queue cohort and put it in the line.
--
-- KEYS[1]  sale hash   KEYS[2]  request stream
-- KEYS[3..] the request hashes of the chunk, in drawn order
-- ARGV[1]  the queue number of the chunk's first request
-- ARGV[2..] the request ids of the chunk, in drawn order (aligned with KEYS[3..])
--
-- Returns the number of requests streamed by this call.
--
-- Idempotent: a request that already has a number is skipped, so a drawer that
-- crashed halfway can run every chunk again. A request cancelled while waiting keeps
-- its number (numbers are fixed by the draw) but is not streamed.

if redis.call('HGET', KEYS[1], 'state') ~= 'drawing' then
  return redis.error_reply('ERR draw: the sale is not drawing')
end
local first = tonumber(ARGV[1])
local streamed = 0
for i = 2, #ARGV do
  local key = KEYS[i + 1]
  local request = redis.call('HMGET', key, 'state', 'number', 'fan', 'x')
  if request[1] and not request[2] then
    local number = first + i - 2
    redis.call('HSET', key, 'number', number)
    if request[1] == 'prequeue' then
      redis.call('HSET', key, 'state', 'queued')
      redis.call('XADD', KEYS[2], '*', 'r', ARGV[i], 'n', number, 'f', request[3], 'x', request[4] or '')
      streamed = streamed + 1
    end
  end
end
return streamed
