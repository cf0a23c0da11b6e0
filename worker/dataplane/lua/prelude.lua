-- prelude.lua: the helpers drain.lua, xadd_many.lua and replay.lua share, prepended to every script by
-- worker/dataplane/scripts.py after the key builders K (generated from worker/dataplane/templates.py).
-- Python computes the same with worker/dataplane/marks.py and ids.py; tests/test_dataplane.py compares.
local DP = {}

-- A batch id: CT<epoch>S<shard>B<tail>, the tail "<seq>R<nonce>" (worker/dataplane/ids.py batch_id,
-- batch_tail).
function DP.batch_id(epoch, shard, tail)
  return 'CT' .. epoch .. 'S' .. shard .. 'B' .. tail
end

function DP.batch_tail(seq, nonce)
  return seq .. 'R' .. nonce
end

-- The prefix (<ns>:{sN}) of a shard key built by K.<name>(prefix) with no parts, e.g. the stream's.
function DP.prefix_of(key, name)
  return string.sub(key, 1, -(#K[name]('') + 1))
end

-- A digest is 16 characters of urlsafe base64 (12 bytes, worker/delivery/producer.py): the first 8
-- are its field, the next 4 (24 bits) pick its bucket among n (marks.py dedup_slot).
do
  local b64 = {}
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  for i = 1, 64 do b64[string.byte(alphabet, i)] = i - 1 end
  function DP.bucket(digest, n)
    local w, x, y, z = string.byte(digest, 9, 12)
    return (((b64[w] * 64 + b64[x]) * 64 + b64[y]) * 64 + b64[z]) % n
  end
end

function DP.field(digest)
  return string.sub(digest, 1, 8)
end

-- The period of a time (ms) in periods of period_days, the oldest period that holds a day of the
-- ttl (s) before it, and when a hash of the period expires: the ttl after the period ends, plus a day
-- (marks.py dedup_periods: the same periods, newest first).
function DP.periods(now_ms, ttl, period_days)
  local day = math.floor(now_ms / 86400000)
  local period = math.floor(day / period_days)
  local oldest = math.floor((day - math.ceil(ttl / 86400)) / period_days)
  return period, oldest, (period + 1) * period_days * 86400 + ttl + 86400
end

-- Bucketed hashes of one shard (issue 18): dedup marks and call refs (key K.dedup_hash, sizes
-- K.dedup_sizes) or the caller history (K.caller_hash, K.caller_sizes). One hash per period and
-- bucket, each expiring whole the ttl after its period; a period's bucket count is fixed when it begins:
-- the larger of min_buckets and the previous period's writes / 100, so ~100 fields a hash stay in the
-- listpack encoding. sizes: "<period>" -> buckets, "c<period>" -> fields written in it.
function DP.hashes(prefix, key_of, sizes_key, now_ms, ttl, period_days, min_buckets)
  local h = {prefix = prefix, key_of = key_of, sizes_key = sizes_key, min_buckets = min_buckets,
    sizes = {}, written = 0, writes = {}, written_keys = {}, found = {}, found_in = {}, key_now = {}, rel = {},
    names = {}}
  h.period, h.oldest, h.expire_at = DP.periods(now_ms, ttl, period_days)
  local raw = redis.call('HGETALL', sizes_key)
  for i = 1, #raw, 2 do
    local n = tonumber(raw[i])
    if n then h.sizes[n] = tonumber(raw[i + 1]) end
  end
  return h
end

-- The key of the hash of period per that holds digest, or nil when that period has no hashes (each
-- name built once per run).
function DP.slot(h, per, digest)
  local n = h.sizes[per]
  if not n then return nil end
  local names = h.names[per]
  if not names then names = {}; h.names[per] = names end
  local bucket = DP.bucket(digest, n)
  local key = names[bucket]
  if not key then key = h.key_of(h.prefix, per, bucket); names[bucket] = key end
  return key
end

-- The value held for each of digests in the newest period of the window that has it, read with one
-- HMGET per hash (period and bucket) instead of one HGET per digest and period: DP.get answers from
-- it. Digests not listed are read by DP.get one at a time.
function DP.prefetch(h, digests)
  local pending, found = digests, h.found
  for per = h.period, h.oldest, -1 do
    local n = h.sizes[per]
    if n and #pending > 0 then
      local fields_of, keys, rest = {}, {}, {}
      for i = 1, #pending do
        local digest = pending[i]
        if found[digest] == nil then
          local key = DP.slot(h, per, digest)
          if per == h.period then h.key_now[digest] = key end
          local fields = fields_of[key]
          if not fields then
            fields = {}
            fields_of[key] = fields
            keys[#keys + 1] = key
          end
          fields[#fields + 1] = digest
        end
      end
      for k = 1, #keys do
        local fields = fields_of[keys[k]]
        local names = {}
        for i = 1, #fields do names[i] = DP.field(fields[i]) end
        local values = redis.call('HMGET', keys[k], unpack(names))
        for i = 1, #fields do
          if values[i] then
            found[fields[i]], h.found_in[fields[i]] = values[i], per
          else
            rest[#rest + 1] = fields[i]
          end
        end
      end
      pending = rest
    end
  end
  for i = 1, #pending do
    if found[pending[i]] == nil then found[pending[i]] = false end
  end
end

-- The value held for digest within the window and the period that holds it, or nil.
function DP.get(h, digest)
  local held = h.found[digest]
  if held == nil then
    held = false
    local field = DP.field(digest)
    for per = h.period, h.oldest, -1 do
      local key = DP.slot(h, per, digest)
      if key then
        local value = redis.call('HGET', key, field)
        if value then
          held = value
          h.found_in[digest] = per
          break
        end
      end
    end
    h.found[digest] = held
  end
  if held then return held, h.found_in[digest] end
  return nil
end

-- Store digest's field in the current period; returns the hash's key and the field. The fields are
-- written by DP.finish, one HSET of many fields per hash; DP.get sees them at once.
function DP.put(h, digest, value)
  local period = h.period
  if not h.sizes[period] then
    local before = tonumber(redis.call('HGET', h.sizes_key, 'c' .. (period - 1)) or '0')
    local n = h.min_buckets
    while n * 100 < before do n = n * 2 end
    h.sizes[period] = n
    redis.call('HSET', h.sizes_key, period, n)
    for per in pairs(h.sizes) do
      if per < h.oldest - 1 then
        redis.call('HDEL', h.sizes_key, per, 'c' .. per)
        h.sizes[per] = nil
      end
    end
  end
  local key = h.key_now[digest] or DP.slot(h, period, digest)
  local fields = h.writes[key]
  if not fields then
    fields = {}
    h.writes[key] = fields
    h.written_keys[#h.written_keys + 1] = key
  end
  local field = DP.field(digest)
  fields[#fields + 1] = field
  fields[#fields + 1] = value
  h.found[digest], h.found_in[digest] = value, period
  h.written = h.written + 1
  return key, field
end

-- Remove digest's field from the hash of an older period (it moves into the current one by DP.put).
function DP.drop(h, per, digest)
  redis.call('HDEL', DP.slot(h, per, digest), DP.field(digest))
end

-- Write the fields of this run (one HSET per hash, each hash's expiry set once) and count them into
-- the current period (the next period's size).
function DP.finish(h)
  for i = 1, #h.written_keys do
    local key = h.written_keys[i]
    local fields = h.writes[key]
    for j = 1, #fields, 1000 do
      redis.call('HSET', key, unpack(fields, j, math.min(j + 999, #fields)))
    end
    redis.call('EXPIREAT', key, h.expire_at)
  end
  h.writes, h.written_keys = {}, {}
  if h.written > 0 then redis.call('HINCRBY', h.sizes_key, 'c' .. h.period, h.written) end
  h.written = 0
end

-- A dedup mark as a batch keeps it (<p>:marks:<id>): 'dd:<period>:<bucket>:<field>', the key of the
-- hash relative to the shard's prefix and the field; DP.unmark removes it (the key of its own before
-- issue 18, 'seen:<digest>' or 'ref:<digest>').
function DP.mark_of(h, key, digest, field)
  local rel = h.rel[key]
  if not rel then
    rel = string.sub(key, #h.prefix + 2) .. ':'
    h.rel[key] = rel
  end
  return rel .. (field or DP.field(digest))
end

function DP.unmark(prefix, mark)
  if string.sub(mark, 1, 3) == 'dd:' then
    return redis.call('HDEL', prefix .. ':' .. string.sub(mark, 1, -10), string.sub(mark, -8))
  end
  return redis.call('DEL', prefix .. ':' .. mark)
end

-- A held call's reason as /metrics counts it: its first word ('no_identifier (note)' is
-- 'no_identifier'), 'unspecified' for none (worker/intake/held.py reason_head).
function DP.reason_head(reason)
  if reason == nil or reason == '' then return 'unspecified' end
  local space = string.find(reason, ' ', 1, true)
  return space and string.sub(reason, 1, space - 1) or reason
end
