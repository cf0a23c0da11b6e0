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
local p = DP.prefix_of(KEYS[1], 'stream')
local caller_ttl = tonumber(ARGV[1])
local period_days, min_buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local history, legacy

local function start()
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000
  history = DP.hashes(p, K.caller_hash, K.caller_sizes(p), now_ms, caller_ttl, period_days, min_buckets)
  -- One-key history of before issue 18 (<p>:caller:<counter>:<digest>) is read, and moved into the
  -- hashes, for one ttl after the shard began bucketed marks (<p>:ddsince; 0: it never had any).
  local since = tonumber(redis.call('GET', K.dedup_since(p)) or '0')
  legacy = since > 0 and now_ms < since + caller_ttl * 1000
end

-- Whether the call marked `mark` is its caller's first; records the caller as seen now.
local function first_call(counter, digest, mark)
  if not history then start() end
  local field, value = DP.field(digest), string.sub(mark, 1, 8)
  for per = history.period, history.oldest, -1 do
    local key = DP.slot(history, per, digest)
    if key then
      local held = redis.call('HGET', key, field)
      if held then
        if per ~= history.period then
          redis.call('HDEL', key, field)
          DP.put(history, digest, held)
        end
        return held == value
      end
    end
  end
  if legacy then
    local old = K.caller(p, counter, digest)
    local held = redis.call('GET', old)
    if held then
      redis.call('DEL', old)
      DP.put(history, digest, string.sub(held, 1, 8))
      return string.sub(held, 1, 8) == value
    end
  end
  DP.put(history, digest, value)
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
if history then DP.finish(history) end
return ids
