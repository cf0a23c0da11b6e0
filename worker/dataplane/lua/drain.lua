-- drain.lua: move the entries holding about COUNT events from the head of one shard's ingest stream
-- into their open buffers, drop repeats, trim the entries off the stream, and seal every buffer that is
-- full or due. An entry is one bucket's events of a producer's chunk (format 3: b bucket, r rows
-- joined, l their lengths, d digests 16 characters each, f v w call refs whose values leave out the
-- bucket's counter, xadd_many.lua) or one event
-- (format 2: b d r [f v]); an entry is taken whole, so a run may take up to one entry's rows past COUNT.
-- One script run is one atomic step: a crash leaves each entry either in the stream or in a buffer,
-- so no consumer group is needed (issue 18): the stream holds exactly the entries not drained yet,
-- read with XRANGE from its head and cut with one XTRIM MINID (whole listpack nodes at a time).
--
-- KEYS: 1 the shard's ingest stream (the other keys of the shard share its hash tag)
-- ARGV: 1 shard prefix  2 count (events)  3 dedup ttl (s)  4 max rows  5 max bytes
--       6 max age (ms; a counter's own in <p>:flushage wins)  7 shard number  8 "1" to seal every open buffer now
--       9 nonce: random letters and digits chosen by the caller for this run (never by Redis)
--       10 dedup period (days)  11 least buckets of a period's dedup hashes
-- Returns: {events read, repeats dropped, sealed batch id, ...}
--
-- A buffer takes its batch's sequence number and the opening run's nonce when it opens
-- (<p>:bufseq: "<seq>R<nonce>", the batch id's tail), so each call's mark records the batch it will
-- be sealed as, by number: a ref becomes "counter:<seq>|column|identifier", a seen mark's value
-- ":<seq>"; the nonce is kept once per batch, <p>:bn:<period> seq -> nonce, expiring with the marks
-- of that period (the status API joins them: worker/intake/call_refs.py).
local p = ARGV[1]
local count = tonumber(ARGV[2])
local dedup_ttl = tonumber(ARGV[3])
local max_rows, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_age_ms = tonumber(ARGV[6])
local shard = ARGV[7]
local seal_all = ARGV[8] == '1'
-- The nonce makes batch ids unique even when Redis forgets its last writes (seq goes back) or is
-- restored from a backup: a repeated seq comes with another nonce, so no id Metrica holds comes back.
local nonce = ARGV[9] or ''

local epoch = redis.call('GET', K.epoch(p))
if not epoch then
  return redis.error_reply('NOEPOCH shard ' .. shard .. ' is not initialised')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stream = KEYS[1]
local due_key, bytes_key = K.due(p), K.buffer_bytes(p)
-- A counter's own flush age (ms; the account registry's, published by worker/accounts/flush.py).
local ages_key = K.flush_ages(p)
local function age_of(bucket)
  return tonumber(redis.call('HGET', ages_key, string.match(bucket, '^(%d+):'))) or max_age_ms
end

local sealed = {}
local rows_of, bytes_of, touched, seq_of = {}, {}, {}, {}
local seq_key, bufseq_key = K.seq(p), K.buffer_seq(p)
local last_seq = tonumber(redis.call('GET', seq_key) or '0')
local first_seq = last_seq

local function load(bucket)
  if rows_of[bucket] == nil then
    rows_of[bucket] = redis.call('LLEN', K.buffer(p, bucket))
    bytes_of[bucket] = tonumber(redis.call('HGET', bytes_key, bucket) or '0')
    seq_of[bucket] = redis.call('HGET', bufseq_key, bucket)
  end
end

local opened = {}  -- the sequence numbers this run opened, each with this run's nonce (<p>:bn:<period>)
local function open(bucket)
  -- The batch's number and this run's nonce: the batch id's tail, fixed when the buffer opens.
  last_seq = last_seq + 1
  seq_of[bucket] = DP.batch_tail(tostring(last_seq), nonce)
  redis.call('HSET', bufseq_key, bucket, seq_of[bucket])
  opened[#opened + 1] = tostring(last_seq)
end

-- Rows and marks of this run wait in Lua tables and go to their buffer with one RPUSH each per
-- bucket (flush), before the buffer is sealed and at the end: not one command per call.
local pending_rows, pending_marks = {}, {}
local function push(key, list)
  for i = 1, #list, 1000 do
    redis.call('RPUSH', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
local function push_fields(key, pairs_list)
  for i = 1, #pairs_list, 1000 do
    redis.call('HSET', key, unpack(pairs_list, i, math.min(i + 999, #pairs_list)))
  end
end
local function flush(bucket)
  local rows = pending_rows[bucket]
  if rows and #rows > 0 then
    push(K.buffer(p, bucket), rows)
    pending_rows[bucket] = {}
  end
  local marks = pending_marks[bucket]
  if marks and #marks > 0 then
    push(K.buffer_marks(p, bucket), marks)
    pending_marks[bucket] = {}
  end
end

local function seal(bucket)
  load(bucket)
  flush(bucket)
  local n = rows_of[bucket]
  redis.call('ZREM', due_key, bucket)
  redis.call('HDEL', bytes_key, bucket)
  touched[bucket] = nil
  if n == 0 then return end
  if not seq_of[bucket] then open(bucket) end  -- a buffer opened before sequences were reserved
  local id = DP.batch_id(epoch, shard, seq_of[bucket])
  redis.call('HDEL', bufseq_key, bucket)
  seq_of[bucket] = nil
  redis.call('RENAME', K.buffer(p, bucket), K.rows(p, id))
  if redis.call('EXISTS', K.buffer_marks(p, bucket)) == 1 then
    redis.call('RENAME', K.buffer_marks(p, bucket), K.marks(p, id))
  end
  -- The record names the (counter, kind, id type) bucket, without the buffer's column set.
  redis.call('HSET', K.batch(p, id), 'state', 'SEALED', 'bucket', string.match(bucket, '^[^/]*'), 'rows', n,
    'bytes', bytes_of[bucket], 'sealed_at', now_ms, 'attempts', 0)
  redis.call('ZADD', K.sealed(p), now_ms, id)
  rows_of[bucket], bytes_of[bucket] = 0, 0
  sealed[#sealed + 1] = id
end

-- Dedup marks and call refs (issue 18): fields of an 8-byte digest in bucketed hashes, one per
-- shard, period of ARGV[10] days and bucket, each expiring whole when the dedup window after its
-- period has passed. A lookup reads the hash of every period that holds a day of the window; a write
-- goes to the current period's. A mark's bucket count is the period's, fixed when the period begins
-- (<p>:ddn: the larger of ARGV[11] and the previous period's marks / 100, so ~100 fields a hash
-- stay in the listpack encoding).
local period_days = tonumber(ARGV[10] or '8')
local min_buckets = tonumber(ARGV[11] or '1024')
local dd_hashes = DP.hashes(p, K.dedup_hash, K.dedup_sizes(p), now_ms, dedup_ttl, period_days, min_buckets)
local period, oldest = dd_hashes.period, dd_hashes.oldest
-- Marks written before issue 18 were keys of their own: read them too for the window after the
-- shard began bucketed marks (<p>:ddsince; 0 on a shard that never had them). Their names are the
-- same digests.
local since = tonumber(redis.call('GET', K.dedup_since(p)) or '0')
local legacy = since > 0 and now_ms < since + dedup_ttl * 1000

-- The value held for a digest within the window (a ref's value, '' for a mark), or nil.
local function find(digest, legacy_key)
  local value = DP.get(dd_hashes, digest)
  if value then return value end
  if legacy then
    value = redis.call('GET', legacy_key(p, digest))
    if value then return value end
  end
  return nil
end

-- The mark names its hash and field, so discarding the batch can remove it (HDEL).
local function put(digest, value)
  local key, field = DP.put(dd_hashes, digest, value)
  return DP.mark_of(dd_hashes, key, digest, field)
end

-- A new entry's dedup: a call's ref (where a later conversion finds it) is also its dedup mark; the
-- same provider call id on another counter (rare) falls back to the per-counter dedup digest.
local function dedup_hashed(dd, ref, ref_value, mark)
  if not dd or dd == '' then return true, nil end
  if ref and ref_value then
    local held = find(ref, K.call_ref)
    if not held then return true, put(ref, ref_value) end
    if string.match(held, '^[^|:]*') == string.match(ref_value, '^[^|:]*') then return false, nil end
  end
  if find(dd, K.dedup_mark) then return false, nil end
  return true, put(dd, mark)
end

local repeats = 0
-- Built once per run: a bucket's buffer per column set, a sequence number's digits, a mark.
local buffer_of, digits_of, mark_of_gen = {}, {}, {}

-- One event into its open buffer, unless it is a repeat. counter: the bucket's counter when ref_value
-- is the value's tail ("|column|identifier", format 3), else nil (a whole value, format 2).
local function take(bucket, row, dedup, ref, ref_value, counter)
  -- One open buffer per column set (the row's mask, worker/delivery/csvfile.py): a batch's rows all
  -- carry the same columns, so its file has no empty optional cell (docs/metrica-api.md, "Mixed
  -- optional columns"). A row stored as JSON (before issue 18) keeps the plain bucket.
  if string.byte(row, 1) ~= 123 then  -- '{'
    local masks = buffer_of[bucket]
    if not masks then masks = {}; buffer_of[bucket] = masks end
    local mask = string.match(row, '^[^,]*')
    local buffer = masks[mask]
    if not buffer then buffer = bucket .. '/' .. mask; masks[mask] = buffer end
    bucket = buffer
  end
  local fresh, mark_key = true, nil
  load(bucket)
  local size = #row + 1
  local full = rows_of[bucket] > 0 and (rows_of[bucket] >= max_rows or bytes_of[bucket] + size > max_bytes)
  -- The batch this row will be sealed as: the open buffer's, or the next sequence number.
  -- Marks name it by its number alone; the nonce is kept once per batch, in <p>:bn:<period>.
  local gen
  local seq = seq_of[bucket]
  if rows_of[bucket] > 0 and not full and seq then
    gen = digits_of[seq]
    if not gen then gen = string.match(seq, '^%d+'); digits_of[seq] = gen end
  elseif full and not seq then gen = tostring(last_seq + 2)  -- seal() numbers it first
  else gen = tostring(last_seq + 1) end
  -- The status API's index (issue 19): a mark's value names the batch, "counter:<seq>R<nonce>".
  local mark = mark_of_gen[gen]  -- a conversion's or chat's digest is its counter's already
  if not mark then mark = ':' .. gen; mark_of_gen[gen] = mark end
  if ref and ref_value then
    if counter then
      ref_value = counter .. ':' .. gen .. ref_value
    else
      local counter_part = string.match(ref_value, '^[^|]*')
      ref_value = counter_part .. ':' .. gen .. string.sub(ref_value, #counter_part + 1)
    end
  end
  fresh, mark_key = dedup_hashed(dedup, ref, ref_value, mark)
  if not fresh then
    repeats = repeats + 1
    return
  end
  if full then seal(bucket) end
  if rows_of[bucket] == 0 or not seq_of[bucket] then
    if rows_of[bucket] == 0 then redis.call('ZADD', due_key, now_ms + age_of(bucket), bucket) end
    open(bucket)
  end
  local rows = pending_rows[bucket]
  if not rows then rows = {}; pending_rows[bucket] = rows end
  rows[#rows + 1] = row
  -- The dedup mark this call set, so discarding its batch can remove it (bufm -> marks:<id>).
  if mark_key then
    local marks = pending_marks[bucket]
    if not marks then marks = {}; pending_marks[bucket] = marks end
    marks[#marks + 1] = mark_key
  end
  rows_of[bucket] = rows_of[bucket] + 1
  bytes_of[bucket] = bytes_of[bucket] + size
  touched[bucket] = true
end

-- Read entries from the stream's head until they hold COUNT events: the first read takes one entry,
-- the next ones as many as the events per entry so far say are missing. Every event is listed first
-- (E_*: bucket, row, dedup digest, ref digest, ref value), so the lookups of all of them go out
-- together, one HMGET per dedup hash (DP.prefetch), before any event is taken in order.
local E_b, E_r, E_d, E_f, E_v, E_c = {}, {}, {}, {}, {}, {}
local read, entries_read, last_id = 0, 0, nil
local groups_read, grouped = 0, 0  -- format-3 entries taken, and their events (the stream's tally)
local from, want = '-', 1
local NO_REF = 46  -- '.': a row of a group without a call ref
while read < count do
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', want)
  for i = 1, #entries do
    if read >= count then break end
    local fields = entries[i][2]
    local bucket, dedup, rows, lengths, refs, values, widths
    for j = 1, #fields, 2 do
      local f = fields[j]
      if f == 'b' then bucket = fields[j + 1]
      elseif f == 'd' then dedup = fields[j + 1]
      elseif f == 'r' then rows = fields[j + 1]
      elseif f == 'l' then lengths = fields[j + 1]
      elseif f == 'f' then refs = fields[j + 1]
      elseif f == 'v' then values = fields[j + 1]
      elseif f == 'w' then widths = fields[j + 1] end
    end
    if lengths then
      -- A group (format 3): its rows split by their lengths, its digests by their fixed width.
      local at, vat, k = 1, 1, 0
      local next_width = widths and string.gmatch(widths, '%d+')
      local counter = refs and string.match(bucket, '^%d+') or false
      for size in string.gmatch(lengths, '%d+') do  -- a number's text: Lua's arithmetic reads it
        read = read + 1
        E_b[read], E_r[read] = bucket, string.sub(rows, at, at + size - 1)
        E_d[read], E_f[read], E_v[read], E_c[read] = string.sub(dedup, k * 16 + 1, k * 16 + 16), false, false, counter
        at = at + size
        if refs then
          local width = next_width()
          if string.byte(refs, k * 16 + 1) ~= NO_REF then
            E_f[read], E_v[read] = string.sub(refs, k * 16 + 1, k * 16 + 16), string.sub(values, vat, vat + width - 1)
          end
          vat = vat + width
        end
        k = k + 1
      end
      groups_read, grouped = groups_read + 1, grouped + k
    elseif bucket and rows then
      read = read + 1
      E_b[read], E_r[read], E_d[read], E_f[read], E_v[read] = bucket, rows, dedup or false, refs or false, values or false
      E_c[read] = false
    end
    entries_read = entries_read + 1
    last_id = entries[i][1]
  end
  if #entries < want or read >= count then break end
  from = '(' .. last_id
  want = read > 0 and math.max(1, math.floor((count - read) * entries_read / read)) or count
end

if read > 0 then
  -- A call is looked up by its ref, a conversion or chat by its dedup digest.
  local digests = {}
  for i = 1, read do
    if E_f[i] and E_v[i] then digests[#digests + 1] = E_f[i] elseif E_d[i] then digests[#digests + 1] = E_d[i] end
  end
  DP.prefetch(dd_hashes, digests)
  for i = 1, read do
    take(E_b[i], E_r[i], E_d[i] or nil, E_f[i] or nil, E_v[i] or nil, E_c[i] or nil)
  end
end
if groups_read > 0 then
  redis.call('HINCRBY', K.stream_tally(p), 'e', -groups_read)
  redis.call('HINCRBY', K.stream_tally(p), 'n', -grouped)
end
if last_id then
  -- Everything up to the last entry read leaves the stream: MINID is the id just after it.
  local ms, seq = string.match(last_id, '^(%d+)-(%d+)$')
  redis.call('XTRIM', stream, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
end

DP.finish(dd_hashes)

for bucket in pairs(pending_rows) do flush(bucket) end

for bucket in pairs(touched) do
  if rows_of[bucket] >= max_rows then
    seal(bucket)
  else
    redis.call('HSET', bytes_key, bucket, bytes_of[bucket])
  end
end

local ready
if seal_all then
  ready = redis.call('ZRANGE', due_key, 0, -1)
else
  ready = redis.call('ZRANGEBYSCORE', due_key, '-inf', now_ms, 'LIMIT', 0, 1000)
end
local hold_key = K.hold(p)
local holding = (not seal_all) and redis.call('SCARD', hold_key) > 0
for i = 1, #ready do
  local bucket = ready[i]
  if holding and redis.call('SISMEMBER', hold_key, string.match(bucket, '^(%d+):')) == 1 then
    -- The counter's login is short of quota: let the batch grow (it still seals when full).
    redis.call('ZADD', due_key, now_ms + age_of(bucket), bucket)
  else
    seal(bucket)
  end
end

if last_seq ~= first_seq then redis.call('SET', seq_key, last_seq) end
if #opened > 0 then
  -- seq -> nonce of the batches opened now, living as long as the marks that name them.
  local bn_key = K.batch_nonces(p, period)
  local args = {}
  for i = 1, #opened do args[#args + 1] = opened[i]; args[#args + 1] = nonce end
  push_fields(bn_key, args)
  redis.call('EXPIREAT', bn_key, dd_hashes.expire_at)
end

local result = {read, repeats}
for i = 1, #sealed do result[#result + 1] = sealed[i] end
return result
