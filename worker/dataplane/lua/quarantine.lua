#!lua flags=allow-oom
-- quarantine.lua: park a batch Metrica refused for good; its rows stay for inspection and replay.
-- KEYS: 1 batch record  2 sealed index  3 quarantine index
-- ARGV: 1 batch id  2 fencing token ('' to skip the check)  3 reason   (time: Redis TIME)
-- Returns 1 when quarantined, 0 when a newer attempt owns the batch or it moved on.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'UPLOADING' and state ~= 'SEALED' then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'state', 'QUARANTINED', 'reason', ARGV[3], 'quarantined_at', now)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return 1
