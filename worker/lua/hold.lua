-- hold.lua: add one call to the held stream, once, while the stream is below its cap.
-- KEYS: 1 the held stream  2 the call's seen key (same slot: tag {held})
-- ARGV: 1 reason  2 call JSON  3 held-at ms  4 seen TTL seconds  5 most entries the stream may hold
-- Returns the entry id, false when the call was held before, or 'full' (nothing written).
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 'full' end
local id = redis.call('XADD', KEYS[1], '*', 'reason', ARGV[1], 'call', ARGV[2], 'at', ARGV[3])
redis.call('SET', KEYS[2], id, 'EX', ARGV[4])  -- the entry id: where the status API finds the call
return id
