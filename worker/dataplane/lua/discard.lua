-- discard.lua: give a quarantined batch up for good, removing its dedup marks unless asked to keep them
-- (worker/delivery/replay.py).
-- KEYS: 1 record  2 rows  3 quarantine index  4 done index  5 the batch's dedup-mark list
-- ARGV: 1 batch id  2 who  3 why  4 now ms  5 shard prefix  6 record retention (s)  7 '1' to keep the marks
-- Returns {1, marks removed, '1' if the batch had a mark list} or {0}.
if redis.call('HGET', KEYS[1], 'state') ~= 'QUARANTINED' then return {0, 0, '0'} end
redis.call('HSET', KEYS[1], 'state', 'DISCARDED', 'discarded_by', ARGV[2], 'discard_reason', ARGV[3],
  'discarded_at', ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local had = redis.call('EXISTS', KEYS[5]) == 1 and '1' or '0'
local removed = 0
if ARGV[7] ~= '1' then
  local marks = redis.call('LRANGE', KEYS[5], 0, -1)
  for i = 1, #marks do
    -- a field of a bucketed dedup hash, 'dd:<period>:<bucket>:<field>' (a key of its own before issue 18)
    removed = removed + DP.unmark(ARGV[5], marks[i])
  end
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[1], 'marks_removed', removed)
else
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
  redis.call('HSET', KEYS[1], 'marks_kept', redis.call('LLEN', KEYS[5]))
end
return {1, removed, had}
