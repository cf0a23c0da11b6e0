#!lua flags=allow-oom
-- quota_acquire.lua: take one request permit under all three Metrica quotas at once, fleet-wide.
-- KEYS (one login's slot, {q:<login>}): 1 login's in-flight requests (zset holder -> lease end ms)
--       2 login's request count for the current UTC day (string), every purpose
--       3 login's request count of this purpose (upload or poll) for the day
-- ARGV: 1 holder id (unique per request)  2 lease ms  3 max parallel  4 (unused: the egress IP's
--       rate is taken first by quota_rate.lua, in that IP's own slot)
--       5 daily limit of this purpose  6 ms until the next UTC midnight  7 daily limit of the login
-- Each purpose has its own share of the day (uploads: daily - polling reserve; polls: the reserve),
-- so polling can never spend the uploads' share. The day is named by the caller from Redis TIME.
-- Returns {1, 'ok', 0} or {0, quota, retry after ms}; nothing is taken unless every quota allows it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_parallel = tonumber(ARGV[3])
local daily_limit, to_midnight = tonumber(ARGV[5]), tonumber(ARGV[6])
local login_limit = tonumber(ARGV[7] or ARGV[5])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= max_parallel then
  return {0, 'parallel', 250}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= login_limit
  or tonumber(redis.call('GET', KEYS[3]) or '0') >= daily_limit then
  return {0, 'daily', to_midnight}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], to_midnight + 86400000)
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], to_midnight + 86400000)
return {1, 'ok', 0}
