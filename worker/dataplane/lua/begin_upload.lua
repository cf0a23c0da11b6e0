#!lua flags=allow-oom
-- begin_upload.lua: claim a batch for one upload attempt under the counter's fencing token.
-- KEYS: 1 batch record   ARGV: 1 fencing token (the attempt's time is Redis TIME)
-- Returns {previous state, previous attempt ms or '', '1' if that attempt ended (its request is
-- over) else '0'}. The record becomes UPLOADING only when it was SEALED, or UPLOADING already (an
-- earlier attempt whose outcome is unknown).
local state = redis.call('HGET', KEYS[1], 'state')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not state then return {'MISSING', '', '0'} end
local fields = redis.call('HMGET', KEYS[1], 'attempt_at', 'fence', 'ended')
local previous_attempt = fields[1] or ''
local ended = (fields[2] and fields[2] == fields[3]) and '1' or '0'
if state == 'SEALED' or state == 'UPLOADING' then
  redis.call('HSET', KEYS[1], 'state', 'UPLOADING', 'fence', ARGV[1], 'attempt_at', now)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
return {state, previous_attempt, ended}
