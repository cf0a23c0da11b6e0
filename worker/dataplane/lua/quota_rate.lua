#!lua flags=allow-oom
-- quota_rate.lua: take one slot of an egress IP's requests per second (Metrica's per-IP quota).
-- Its own slot ({q:ip:<egress>}), separate from the login's keys (quota_acquire.lua), so a cluster
-- spreads logins over masters. quota.py takes this first and gives the slot back (ZREM) when the
-- login refuses: the IP never goes above its rate, at worst it runs below it for a moment.
-- KEYS: 1 egress IP's requests of the last second (zset holder -> ms)
-- ARGV: 1 holder id  2 max per second
-- Returns {1, 'ok', 0} or {0, 'rate', retry after ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, 'rate', math.max(1, tonumber(oldest[2]) + 1000 - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2000)
return {1, 'ok', 0}
