-- begin_draw: close the pre-queue at the on-sale instant.
--
-- KEYS[1]  sale hash   KEYS[2]  prequeue set
--
-- Returns {state, member...}: the sale's state after the call and, when it is
-- "drawing", every request id of the pre-queue cohort (order is meaningless here;
-- the caller orders them with the published seed).
--
-- Atomicity: from this call on, joins go to the latecomers list, so the cohort is
-- frozen. Calling it again during a draw (a crashed drawer resumes) returns the
-- same cohort.

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'scheduled' then
  redis.call('HSET', KEYS[1], 'state', 'drawing')
  state = 'drawing'
end
if state ~= 'drawing' then return {state or ''} end
local result = {'drawing'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  result[#result + 1] = id
end
return result
