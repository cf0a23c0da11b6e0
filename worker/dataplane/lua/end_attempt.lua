#!lua flags=allow-oom
-- end_attempt.lua: note that this attempt's request is over without a recorded upload.
-- KEYS: 1 batch record
-- ARGV: 1 fencing token  2 '1' when Metrica surely stored nothing  3 error text  4 '1' to count it
--       as a failure of the file (5xx, no answer), '0' for quota or auth answers
-- With ARGV[2] = '1' the batch goes back to SEALED, so the next attempt posts at once; otherwise it
-- stays UPLOADING and the next attempt first looks for the batch in Metrica's list.
-- The first failure's time (Redis TIME) is kept: the give-up window runs from it, not from sealing,
-- so a batch parked for hours (quota) is not quarantined on its first failure afterwards.
-- Returns {failures, ms since the first failure}, or {-1, 0} when a newer attempt owns the batch.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADING' or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then
  return {-1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'ended', ARGV[1], 'last_error', ARGV[3])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'state', 'SEALED') end
local failures
if ARGV[4] == '1' then
  redis.call('HSETNX', KEYS[1], 'first_failure_at', now)
  failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
else
  failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or now)
return {failures, now - first}
