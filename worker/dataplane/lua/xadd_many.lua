-- xadd_many.lua: append a chunk's accepted events to one shard's ingest stream, one entry per bucket.
-- KEYS: 1 the shard's ingest stream (<p>:in; the caller-history keys share its hash tag)
-- ARGV: 1 caller-history ttl (s)  2 caller-history period (days)  3 least buckets of a period's
--       caller-history hashes  4 the stored row's mask bit of FirstTimeCaller (worker/delivery/csvfile.py),
--       then one group per bucket (worker/delivery/producer.py group_args): bucket, n (rows), the n
--       dedup digests (16 characters each, joined), the n call-ref digests (16 characters each, 16 dots
--       for none; '' when no row has one), the call-ref values without their counter (the bucket's:
--       "|column|identifier") joined, their lengths in bytes (',' between),
--       the n callers ('' when none has one; else 28 characters a row: 20 of the caller digest, base64 of
--       a keyed hash of counter and caller number (worker/intake/callers.py), and the first 8 of the call
--       mark; 28 dots for none), then the n stored rows ("<hex mask>,<CSV cells>"), one argument each.
-- Returns the new entry ids, one per group, in order.
--
-- A group becomes one stream entry (data format 3, worker/format.py): b the bucket, r the rows joined,
-- l their lengths in bytes (',' between: a CSV cell may hold a newline), d, f, v and w as given. Redis
-- parses one XADD per bucket and chunk, and drain.lua splits the entry (an entry of format 2, one
-- call with b d r [f v], is still read).
--
-- FirstTimeCaller is decided here, in the same step that stores the call. The caller history
-- (issue 18) is fields of bucketed hashes, one per shard, period and bucket (<p>:ch:<period>:<b>),
-- each expiring whole the ttl after its period ends: field the first 8 characters of the caller
-- digest, value the first 8 of the mark of the caller's first call. Every call moves its caller's
-- field into the current period, so a caller is new again only after the whole ttl without calling,
-- and the same call always gets the same answer however often it is delivered. The history of a
-- chunk's callers is read with one HMGET per hash (DP.prefetch) and written with one HSET per hash.
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
  local held, per = DP.get(history, digest)
  if held then
    if per ~= history.period then
      DP.drop(history, per, digest)
      DP.put(history, digest, held)
    end
    return held == mark
  end
  if legacy then
    local old = K.caller(p, counter, digest)
    held = redis.call('GET', old)
    if held then
      redis.call('DEL', old)
      DP.put(history, digest, string.sub(held, 1, 8))
      return string.sub(held, 1, 8) == mark
    end
  end
  DP.put(history, digest, mark)
  return true
end

local CALLER, NO_CALLER = 28, 46  -- a caller's width in its group's argument; '.' (none)
local first_bit = tonumber(ARGV[4])

-- Every caller of the chunk, read at once before any is decided.
local callers = {}
local i = 5
while i <= #ARGV do
  local n, with = tonumber(ARGV[i + 1]), ARGV[i + 6]
  if with ~= '' then
    for k = 0, n - 1 do
      if string.byte(with, k * CALLER + 1) ~= NO_CALLER then
        callers[#callers + 1] = string.sub(with, k * CALLER + 1, k * CALLER + 20)
      end
    end
  end
  i = i + 7 + n
end
if #callers > 0 then
  start()
  DP.prefetch(history, callers)
end

local ids, events = {}, 0
i = 5
while i <= #ARGV do
  local bucket, n, with = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 6]
  local rows, lengths = {}, {}
  local counter = with ~= '' and string.match(bucket, '^(%d+):')
  for k = 1, n do
    local row = ARGV[i + 6 + k]
    local at = (k - 1) * CALLER
    if counter and string.byte(with, at + 1) ~= NO_CALLER then
      local first = first_call(counter, string.sub(with, at + 1, at + 20), string.sub(with, at + 21, at + 28))
      -- FirstTimeCaller is the last column of a stored call row: its bit in the mask, its cell appended.
      local comma = string.find(row, ',', 1, true)
      local mask = bit.bor(tonumber(string.sub(row, 1, comma - 1), 16), first_bit)
      row = string.format('%x', mask) .. string.sub(row, comma) .. ',' .. (first and '1' or '0')
    end
    rows[k] = row
    lengths[k] = #row
  end
  local r, l = table.concat(rows), table.concat(lengths, ',')
  if ARGV[i + 3] == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', bucket, 'r', r, 'l', l, 'd', ARGV[i + 2])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', bucket, 'r', r, 'l', l, 'd', ARGV[i + 2],
      'f', ARGV[i + 3], 'v', ARGV[i + 4], 'w', ARGV[i + 5])
  end
  events = events + n
  i = i + 7 + n
end
if history then DP.finish(history) end
-- The stream's tally: how many of its entries are groups, and how many events they hold.
redis.call('HINCRBY', K.stream_tally(p), 'e', #ids)
redis.call('HINCRBY', K.stream_tally(p), 'n', events)
return ids
