-- finish_draw: number the latecomers behind the cohort and open the sale.
--
-- KEYS[1]  sale hash   KEYS[2]  request stream   KEYS[3]  latecomers list
-- KEYS[4]  next-number counter   KEYS[5]  prequeue set
-- KEYS[6..] the request hashes of the latecomers, in arrival order
-- ARGV[1]  the cohort's size (its last queue number)
-- ARGV[2..] the latecomers' request ids as the caller read them (aligned with KEYS[6..])
--
-- Returns "open", or "retry" when more latecomers arrived since the caller read the
-- list (the caller reads it again and calls again).
--
-- Atomicity: the latecomers are numbered first come, first served right behind the
-- cohort, and the sale opens, in one step; joins after it are numbered directly.

if redis.call('HGET', KEYS[1], 'state') ~= 'drawing' then
  return redis.error_reply('ERR finish_draw: the sale is not drawing')
end
local waiting = redis.call('LRANGE', KEYS[3], 0, -1)
if #waiting ~= #ARGV - 1 then return 'retry' end
for i = 2, #ARGV do
  if waiting[i - 1] ~= ARGV[i] then return 'retry' end
end

redis.call('SET', KEYS[4], ARGV[1])
for i = 2, #ARGV do
  local key = KEYS[i + 4]
  local request = redis.call('HMGET', key, 'state', 'fan', 'x')
  local number = redis.call('INCR', KEYS[4])
  redis.call('HSET', key, 'number', number)
  if request[1] == 'prequeue' then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('XADD', KEYS[2], '*', 'r', ARGV[i], 'n', number, 'f', request[2], 'x', request[3] or '')
  end
end
redis.call('DEL', KEYS[3], KEYS[5])
redis.call('HSET', KEYS[1], 'state', 'open', 'prequeue_size', ARGV[1])
return 'open'
