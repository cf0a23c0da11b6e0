#!lua flags=allow-oom
-- quota_acquire.lua: take one request permit under Metrica's per-login quotas at once, fleet-wide.
-- KEYS (one login's slot, {q:<login>}): 1 login's in-flight requests (zset holder -> lease end ms)
--       2 login's request count for the current UTC day (string), every group
--       3 login's request count of this request's method group (client_read / client_write) today
--       4 (optional) the purpose key of before issue 24 the group carries on (upload / poll)
-- ARGV: 1 holder id (unique per request)  2 lease ms  3 max parallel  4 (unused: the egress IP's
--       rate is taken first by quota_rate.lua, in that IP's own slot)
--       5 daily limit of this group  6 ms until the next UTC midnight  7 daily limit of the login
--       over every group (0: none; Metrica counts each group separately)
-- A group key that does not exist yet starts from KEYS[4]'s count, so an upgrade in the middle of a
-- day keeps the day's count; KEYS[4] is still counted, so a not yet upgraded worker sees it too.
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
if KEYS[4] and redis.call('EXISTS', KEYS[3]) == 0 then
  local carried = redis.call('GET', KEYS[4])
  if carried then redis.call('SET', KEYS[3], carried, 'PX', to_midnight + 86400000) end
end
if (login_limit > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= login_limit)
  or tonumber(redis.call('GET', KEYS[3]) or '0') >= daily_limit then
  return {0, 'daily', to_midnight}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
for i = 2, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], to_midnight + 86400000)
end
return {1, 'ok', 0}
