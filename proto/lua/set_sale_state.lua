-- set_sale_state: move a sale from one of the allowed states to a new one.
--
-- KEYS[1] sale hash   ARGV[1] the new state   ARGV[2..] the states it may come from
--
-- Returns {1, previous} when the state changed, {0, current} when the current state
-- is not one it may come from (or the sale is not loaded: current "").

local current = redis.call('HGET', KEYS[1], 'state') or ''
for i = 2, #ARGV do
  if current == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1])
    return {1, current}
  end
end
return {0, current}
