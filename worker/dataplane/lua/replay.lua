-- replay.lua: move a quarantined batch's rows to a new SEALED batch with a fresh id (worker/delivery/replay.py).
-- KEYS: 1 record  2 rows  3 quarantine index  4 sealed index  5 done index  6 seq  7 epoch  8 marks
-- ARGV: 1 batch id  2 shard prefix  3 shard  4 now ms  5 who  6 nonce (worker.dataplane.ids.batch_nonce)
--       7 record retention (s): the REPLAYED record expires then
-- Returns {1, new batch id} or {0, why}.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'QUARANTINED' then return {0, state or 'MISSING'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 'NOROWS'} end
local epoch = redis.call('GET', KEYS[7])
if not epoch then return {0, 'NOEPOCH'} end
local id = DP.batch_id(epoch, ARGV[3], DP.batch_tail(redis.call('INCR', KEYS[6]), ARGV[6]))
local rec = redis.call('HMGET', KEYS[1], 'bucket', 'rows', 'bytes')
redis.call('RENAME', KEYS[2], K.rows(ARGV[2], id))
if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('RENAME', KEYS[8], K.marks(ARGV[2], id)) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('HSET', K.batch(ARGV[2], id), 'state', 'SEALED', 'bucket', rec[1], 'rows', rec[2],
  'bytes', rec[3] or 0, 'sealed_at', ARGV[4], 'attempts', 0, 'replay_of', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], id)
redis.call('HSET', KEYS[1], 'state', 'REPLAYED', 'replayed_as', id, 'replayed_at', ARGV[4], 'replayed_by', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
return {1, id}
