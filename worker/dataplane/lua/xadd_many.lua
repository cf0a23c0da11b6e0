-- xadd_many.lua: append many accepted events to one shard's ingest stream in one command.
-- KEYS: 1 the shard's ingest stream (<p>:in; the caller-history keys share its hash tag)
-- ARGV: 1 caller-history ttl (s)  2 caller-history period (days)  3 least buckets of a period's
--       caller-history hashes  4 the stored row's mask bit of FirstTimeCaller (worker/delivery/csvfile.py),
--       then groups of 7: bucket, dedup digest, stored row ("<hex mask>,<CSV cells>"), call-ref digest
--       ('' if none), call-ref value, caller digest ('' if none: base64 of a keyed hash of counter
--       and caller number, worker/intake/callers.py), call mark
-- Returns the new entry ids in order. One script per shard and chunk replaces one XADD per event:
-- the client packs one command, and Redis parses it once.
--
-- FirstTimeCaller is decided here, in the same step that stores the call. The caller history
-- (issue 18) is fields of bucketed hashes, one per shard, period and bucket (<p>:ch:<period>:<b>),
-- each expiring whole the ttl after its period ends: field the first 8 characters of the caller
-- digest, value the first 8 of the mark of the caller's first call. Every call moves its caller's
-- field into the current period, so a caller is new again only after the whole ttl without calling,
-- and the same call always gets the same answer however often it is delivered.
local p = string.sub(KEYS[1], 1, -4)
local caller_ttl = tonumber(ARGV[1])
local period_days, min_buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local period, oldest, expire_at, sizes, legacy
local sizes_key = p .. ':chn'
local b64 = {}
local expiring = {}
local added = 0

local function start()
  local t = redis.call('TIME')
  local day = math.floor(tonumber(t[1]) / 86400)
  period = math.floor(day / period_days)
  oldest = math.floor((day - math.ceil(caller_ttl / 86400)) / period_days)
  expire_at = (period + 1) * period_days * 86400 + caller_ttl + 86400
  sizes = {}
  local raw = redis.call('HGETALL', sizes_key)
  for i = 1, #raw, 2 do
    local n = tonumber(raw[i])
    if n then sizes[n] = tonumber(raw[i + 1]) end
  end
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  for i = 1, 64 do b64[string.byte(alphabet, i)] = i - 1 end
  -- One-key history of before issue 18 (<p>:caller:<counter>:<digest>) is read, and moved into the
  -- hashes, for one ttl after the shard began bucketed marks (<p>:ddsince; 0: it never had any).
  local since = tonumber(redis.call('GET', p .. ':ddsince') or '0')
  legacy = since > 0 and tonumber(t[1]) * 1000 < since + caller_ttl * 1000
end

local function slot(per, digest)
  local n = sizes[per]
  if not n then return nil end
  local w, x, y, z = string.byte(digest, 9, 12)
  return p .. ':ch:' .. per .. ':' .. ((((b64[w] * 64 + b64[x]) * 64 + b64[y]) * 64 + b64[z]) % n)
end

local function put(digest, value)
  if not sizes[period] then
    local before = tonumber(redis.call('HGET', sizes_key, 'c' .. (period - 1)) or '0')
    local n = min_buckets
    while n * 100 < before do n = n * 2 end
    sizes[period] = n
    redis.call('HSET', sizes_key, period, n)
    for per in pairs(sizes) do
      if per < oldest - 1 then
        redis.call('HDEL', sizes_key, per, 'c' .. per)
        sizes[per] = nil
      end
    end
  end
  local key = slot(period, digest)
  redis.call('HSET', key, string.sub(digest, 1, 8), value)
  if not expiring[key] then
    expiring[key] = true
    redis.call('EXPIREAT', key, expire_at)
  end
end

-- Whether the call marked `mark` is its caller's first; records the caller as seen now.
local function first_call(counter, digest, mark)
  if not period then start() end
  local field, value = string.sub(digest, 1, 8), string.sub(mark, 1, 8)
  for per = period, oldest, -1 do
    local key = slot(per, digest)
    if key then
      local held = redis.call('HGET', key, field)
      if held then
        if per ~= period then
          redis.call('HDEL', key, field)
          put(digest, held)
          added = added + 1
        end
        return held == value
      end
    end
  end
  if legacy then
    local old = p .. ':caller:' .. counter .. ':' .. digest
    local held = redis.call('GET', old)
    if held then
      redis.call('DEL', old)
      put(digest, string.sub(held, 1, 8))
      added = added + 1
      return string.sub(held, 1, 8) == value
    end
  end
  put(digest, value)
  added = added + 1
  return true
end

local first_bit = tonumber(ARGV[4])
local ids = {}
for i = 5, #ARGV, 7 do
  local row = ARGV[i + 2]
  local caller, mark = ARGV[i + 5], ARGV[i + 6]
  if caller ~= '' then
    local first = first_call(string.match(ARGV[i], '^(%d+):'), caller, mark)
    -- FirstTimeCaller is the last column of a stored call row: its bit in the mask, its cell appended.
    local comma = string.find(row, ',', 1, true)
    local mask = bit.bor(tonumber(string.sub(row, 1, comma - 1), 16), first_bit)
    row = string.format('%x', mask) .. string.sub(row, comma) .. ',' .. (first and '1' or '0')
  end
  local ref = ARGV[i + 3]
  if ref == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', row)
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', row,
      'f', ref, 'v', ARGV[i + 4])
  end
end
if added > 0 then redis.call('HINCRBY', sizes_key, 'c' .. period, added) end
return ids
