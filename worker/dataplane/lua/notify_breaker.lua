-- notify_breaker.lua: one account's webhook circuit breaker (worker/notify/breaker.py), in one step each.
-- Fields of the hash, per account: "<account>:failures" (consecutive failed deliveries), "<account>:open"
-- (ms until which deliveries pause), "<account>:probe" (ms until which one half-open probe runs).
-- KEYS: 1 breaker hash
-- ARGV: 1 op ("allow" | "ok" | "fail")  2 account  3 now ms  4 failures that open it  5 pause ms  6 probe ms
-- allow -> {"closed", 0} | {"open", ms to wait until} | {"probe", 0} (this caller is the one probe; the
--          others wait one pause, or until the probe's time is up, whichever comes first)
-- ok    -> {"closed", failures before}
-- fail  -> {"open", ms until} when it opened (again) | {"closed", failures so far}
local f, o, p = ARGV[2] .. ':failures', ARGV[2] .. ':open', ARGV[2] .. ':probe'
local now = tonumber(ARGV[3])
if ARGV[1] == 'allow' then
  local open = tonumber(redis.call('HGET', KEYS[1], o) or '0')
  if open == 0 then return {'closed', 0} end
  if now < open then return {'open', open} end
  local probe = tonumber(redis.call('HGET', KEYS[1], p) or '0')
  if now < probe then return {'open', math.min(probe, now + tonumber(ARGV[5]))} end
  redis.call('HSET', KEYS[1], p, now + tonumber(ARGV[6]))
  return {'probe', 0}
elseif ARGV[1] == 'ok' then
  local before = tonumber(redis.call('HGET', KEYS[1], f) or '0')
  redis.call('HDEL', KEYS[1], f, o, p)
  return {'closed', before}
end
local failures = redis.call('HINCRBY', KEYS[1], f, 1)
local probing = redis.call('HEXISTS', KEYS[1], p) == 1
if failures >= tonumber(ARGV[4]) or probing then
  local until_ms = now + tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], o, until_ms)
  redis.call('HDEL', KEYS[1], p)
  return {'open', until_ms}
end
return {'closed', failures}
