#!lua flags=allow-oom
-- record_status.lua: copy an upload's status from Metrica; a final one closes the batch.
-- KEYS: 1 batch record  2 batch rows  3 uploaded index  4 done index
-- ARGV: 1 batch id  2 upload id  3 status  4 source qty  5 line qty  6 now (ms)  7 rows ttl (s)
-- Returns 1 when the batch became final, 0 otherwise.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADED' or redis.call('HGET', KEYS[1], 'upload_id') ~= ARGV[2] then
  return 0
end
local status = ARGV[3]
redis.call('HSET', KEYS[1], 'status', status, 'checked_at', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'source_quantity', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'line_quantity', ARGV[5]) end
if ARGV[4] ~= '' and ARGV[5] ~= '' and tonumber(ARGV[5]) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'rejected_lines', tonumber(ARGV[4]) - tonumber(ARGV[5]))
end
if status == 'PROCESSED' or status == 'LINKAGE_FAILURE' then
  redis.call('HSET', KEYS[1], 'state', status, 'final_at', ARGV[6])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
  return 1
end
return 0
