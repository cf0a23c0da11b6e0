#!lua flags=allow-oom
-- record_upload.lua: record the upload Metrica accepted, if this attempt still holds the fence.
-- KEYS: 1 batch record  2 sealed index  3 uploaded index
-- ARGV: 1 batch id  2 fencing token  3 upload id  4 status  5 unused  6 how ('posted'|'adopted')
-- Times are Redis TIME.
-- Returns 1 when recorded, 0 when a newer attempt owns the batch or it is no longer UPLOADING.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADING' or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'UPLOADED', 'upload_id', ARGV[3], 'status', ARGV[4],
  'uploaded_at', now, 'recorded_by', ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return 1
