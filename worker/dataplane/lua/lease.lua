-- lease.lua: give a visitor session a number from its counter's pool, or extend the one it holds.
-- KEYS: 1 pool (zset number -> lease end ms)  2 sessions (hash session -> number)
--       3 holders (hash number -> "session|lease id|address key|network key")
--       4 lease log (hash lease id -> record)  5 lease id sequence  6 exhausted counts (hash counter -> n)
--       7 requests of this counter in this second
--       8 live leases of this client address in this pool (zset number -> lease end ms)
--       9 live leases of this client's /24 or /64 in this pool (zset number -> lease end ms)
-- ARGV: 1 session key  2 session JSON  3 lease ms  4 history ms  5 counter  6 the counter's shard prefix
--       7 limit per counter and second  8 first lease ms  9 live leases per address  10 per network
-- Returns {number, lease end ms, 'extended'|'new'}, or {'', 0, why} with why one of 'nopool' (the
-- counter has no pool: nothing is written), 'rate_counter', 'address_limit', 'network_limit',
-- 'exhausted'. A new session gets the short first lease; only a returning session (a second
-- request while it holds the number) gets the full lease, so one-shot bots hold numbers briefly.
-- The free number whose lease ended longest ago is taken first (never-leased numbers score 0).
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0, 'nopool'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local session, record_json = ARGV[1], ARGV[2]
local lease_ms, history_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix, counter = ARGV[6], ARGV[5]

local by_counter = redis.call('INCR', KEYS[7])
if by_counter == 1 then redis.call('EXPIRE', KEYS[7], 2) end
if by_counter > tonumber(ARGV[7]) then return {'', 0, 'rate_counter'} end

local function live(key, number, ends)
  redis.call('ZADD', key, ends, number)
  redis.call('PEXPIREAT', key, ends)
end

local held = redis.call('HGET', KEYS[2], session)
if held then
  local holder = redis.call('HGET', KEYS[3], held)
  local score = redis.call('ZSCORE', KEYS[1], held)
  if holder and score and tonumber(score) >= now then
    local parts = {}
    for part in string.gmatch(holder, '[^|]+') do parts[#parts + 1] = part end
    if parts[1] == session then
      local ends = now + lease_ms
      local lease_id = parts[2]
      local entry = redis.call('HGET', KEYS[4], lease_id)
      redis.call('ZADD', KEYS[1], 'XX', ends, held)
      if parts[3] then live(parts[3], held, ends) end
      if parts[4] then live(parts[4], held, ends) end
      if entry then
        local a = string.find(entry, '|', 1, true)
        local b = string.find(entry, '|', a + 1, true)
        local c = string.find(entry, '|', b + 1, true)
        redis.call('HSET', KEYS[4], lease_id, string.sub(entry, 1, b) .. ends .. string.sub(entry, c))
      end
      return {held, ends, 'extended'}
    end
  end
  redis.call('HDEL', KEYS[2], session)
end

redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. now)
if redis.call('ZCARD', KEYS[8]) >= tonumber(ARGV[9]) then return {'', 0, 'address_limit'} end
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. now)
if redis.call('ZCARD', KEYS[9]) >= tonumber(ARGV[10]) then return {'', 0, 'network_limit'} end

local free = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 1)
if #free == 0 then
  redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
  return {'', 0, 'exhausted'}
end
local ends = now + tonumber(ARGV[8])
local number = free[1]
local previous = redis.call('HGET', KEYS[3], number)
if previous then
  redis.call('HDEL', KEYS[2], string.sub(previous, 1, string.find(previous, '|', 1, true) - 1))
end
local lease_id = tostring(redis.call('INCR', KEYS[5]))
redis.call('ZADD', KEYS[1], ends, number)
redis.call('HSET', KEYS[3], number, session .. '|' .. lease_id .. '|' .. KEYS[8] .. '|' .. KEYS[9])
redis.call('HSET', KEYS[2], session, number)
redis.call('HSET', KEYS[4], lease_id, number .. '|' .. now .. '|' .. ends .. '|' .. record_json)
live(KEYS[8], number, ends)
live(KEYS[9], number, ends)
local hist = K.pool_history(prefix, counter, number)
redis.call('ZADD', hist, now, lease_id)
-- History older than the join window can no longer attribute anything: drop a little each time.
local old = redis.call('ZRANGEBYSCORE', hist, '-inf', now - history_ms, 'LIMIT', 0, 20)
if #old > 0 then
  redis.call('HDEL', KEYS[4], unpack(old))
  redis.call('ZREM', hist, unpack(old))
end
return {number, ends, 'new'}
