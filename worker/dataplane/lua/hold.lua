-- hold.lua: add one call to the held stream, once, while the stream and its owner are below their caps.
-- KEYS: 1 the held stream  2 the call's seen key  3 the per-owner counts hash  4 the per-reason counts
--       hash (all in one slot: tag {held})
-- ARGV: 1 reason  2 call JSON  3 held-at ms  4 seen TTL seconds  5 most entries the stream may hold
--       6 the owner account of the credential that brought the call ('' for an operator credential)
--       7 most entries one owner may have
-- Returns the entry id, false when the call was held before, 'full' or 'full_owner' (nothing written).
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 'full' end
local id
if ARGV[6] ~= '' then
  if tonumber(redis.call('HGET', KEYS[3], ARGV[6]) or '0') >= tonumber(ARGV[7]) then return 'full_owner' end
  id = redis.call('XADD', KEYS[1], '*', 'reason', ARGV[1], 'call', ARGV[2], 'at', ARGV[3], 'owner', ARGV[6])
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
else
  id = redis.call('XADD', KEYS[1], '*', 'reason', ARGV[1], 'call', ARGV[2], 'at', ARGV[3])
end
-- Counted under the reason's first word, as worker/intake/held.py's reason_head names it (/metrics).
redis.call('HINCRBY', KEYS[4], DP.reason_head(ARGV[1]), 1)
redis.call('SET', KEYS[2], id, 'EX', ARGV[4])  -- the entry id: where the status API finds the call
return id
