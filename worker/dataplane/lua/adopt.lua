-- adopt.lua: a quarantined batch Metrica holds after all becomes UPLOADED with that upload (worker/delivery/replay.py).
-- KEYS: 1 record  2 quarantine index  3 uploaded index
-- ARGV: 1 batch id  2 upload id  3 status  4 now ms  5 who
if redis.call('HGET', KEYS[1], 'state') ~= 'QUARANTINED' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'UPLOADED', 'upload_id', ARGV[2], 'status', ARGV[3],
  'uploaded_at', ARGV[4], 'recorded_by', 'adopted_on_replay', 'replayed_by', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
