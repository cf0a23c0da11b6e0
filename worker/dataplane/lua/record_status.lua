#!lua flags=allow-oom
-- record_status.lua: copy an upload's status from Metrica; a final one closes the batch.
-- KEYS: 1 batch record  2 batch rows  3 uploaded index  4 done index  5 the batch's dedup-mark list
-- ARGV: 1 batch id  2 upload id  3 status  4 source qty  5 line qty  6 unused  7 rows ttl (s)
--       8 final record ttl (s): the record expires, and `done` drops entries older than it
-- Times are Redis TIME. Returns 1 when the batch became final, 0 otherwise.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADED' or redis.call('HGET', KEYS[1], 'upload_id') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local status = ARGV[3]
redis.call('HSET', KEYS[1], 'status', status, 'checked_at', now)
redis.call('HDEL', KEYS[1], 'missing')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'source_quantity', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'line_quantity', ARGV[5]) end
if ARGV[4] ~= '' and ARGV[5] ~= '' and tonumber(ARGV[5]) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'rejected_lines', tonumber(ARGV[4]) - tonumber(ARGV[5]))
end
if status == 'PROCESSED' or status == 'LINKAGE_FAILURE' then
  local record_ttl = tonumber(ARGV[8] or '0')
  redis.call('HSET', KEYS[1], 'state', status, 'final_at', now)
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
  if KEYS[5] then redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7])) end
  if record_ttl > 0 then
    redis.call('EXPIRE', KEYS[1], record_ttl)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - record_ttl * 1000)
  end
  return 1
end
return 0
