-- release.lua: a visitor left the page; its lease ends soon (not at once: a visitor who leaves may
-- still dial the number they saw, and a next page of the same site asks again and keeps it).
-- KEYS: 1 pool (zset number -> lease end ms)  2 sessions (hash session -> number)
--       3 holders (hash number -> "session|lease id|address key|network key")  4 lease log
-- ARGV: 1 session key  2 hold ms (the lease ends at most this long from now)
-- Returns the lease's new end in ms, or 0 when the session holds no live number (nothing written).
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return 0 end
local holder = redis.call('HGET', KEYS[3], held)
local score = redis.call('ZSCORE', KEYS[1], held)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not holder or not score or tonumber(score) < now then return 0 end
local parts = {}
for part in string.gmatch(holder, '[^|]+') do parts[#parts + 1] = part end
if parts[1] ~= ARGV[1] then return 0 end
local ends = math.min(tonumber(score), now + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], 'XX', ends, held)
if parts[3] then redis.call('ZADD', parts[3], 'XX', ends, held) end
if parts[4] then redis.call('ZADD', parts[4], 'XX', ends, held) end
local entry = redis.call('HGET', KEYS[4], parts[2])
if entry then
  local a = string.find(entry, '|', 1, true)
  local b = string.find(entry, '|', a + 1, true)
  local c = string.find(entry, '|', b + 1, true)
  redis.call('HSET', KEYS[4], parts[2], string.sub(entry, 1, b) .. ends .. string.sub(entry, c))
end
return ends
