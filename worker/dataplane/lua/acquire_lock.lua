#!lua flags=allow-oom
-- acquire_lock.lua: take a counter's upload lock with a fresh fencing token, in one step.
-- Runs even when Redis is at maxmemory (allow-oom): an upload frees memory, so it must never be
-- refused for want of it.
-- KEYS: 1 the counter's lock  2 the counter's fencing-token sequence
-- ARGV: 1 lease (ms)
-- Returns {token, 1} when taken, {'', lease left in ms} when another attempt holds it.
local token = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], token, 'NX', 'PX', tonumber(ARGV[1])) then
  return {tostring(token), 1}
end
return {'', math.max(redis.call('PTTL', KEYS[1]), 0)}
