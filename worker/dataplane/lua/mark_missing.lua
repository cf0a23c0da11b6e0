#!lua flags=allow-oom
-- mark_missing.lua: Metrica did not know an uploaded batch's upload (404, or the id carries another
-- batch's comment). After LIMIT such answers in a row the batch is quarantined (missing_at_metrica),
-- so `ctl quarantine replay` looks it up by comment and re-sends it if Metrica lost it.
-- KEYS: 1 batch record  2 uploaded index  3 quarantine index
-- ARGV: 1 batch id  2 upload id  3 limit  4 reason
-- Returns {misses in a row, 1 if quarantined now}, or {-1, 0} when the batch moved on.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADED' or redis.call('HGET', KEYS[1], 'upload_id') ~= ARGV[2] then
  return {-1, 0}
end
local misses = redis.call('HINCRBY', KEYS[1], 'missing', 1)
if misses < tonumber(ARGV[3]) then return {misses, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'QUARANTINED', 'reason', ARGV[4], 'quarantined_at', now)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return {misses, 1}
