#!lua flags=allow-oom
-- end_attempt.lua: note that this attempt's request is over without a recorded upload.
-- KEYS: 1 batch record
-- ARGV: 1 fencing token  2 '1' when Metrica surely stored nothing  3 error text  4 '1' to count it
--       as a failure of the file (5xx, no answer), '0' for quota or auth answers
-- With ARGV[2] = '1' the batch goes back to SEALED, so the next attempt posts at once; otherwise it
-- stays UPLOADING and the next attempt first looks for the batch in Metrica's list.
-- Returns the batch's failure count, or -1 when a newer attempt owns the batch.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADING' or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'ended', ARGV[1], 'last_error', ARGV[3])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'state', 'SEALED') end
if ARGV[4] == '1' then return redis.call('HINCRBY', KEYS[1], 'failures', 1) end
return tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
