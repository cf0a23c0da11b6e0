#!lua flags=allow-oom
-- take_lock.lua: take a plain lock (no fencing) for a lease, even when Redis is at maxmemory.
-- KEYS: 1 lock   ARGV: 1 holder token  2 lease (ms)
-- Returns 1 when taken, 0 when another holder has it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return 1 end
return 0
