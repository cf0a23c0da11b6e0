-- xadd_many.lua: append many accepted events to one shard's ingest stream in one command.
-- KEYS: 1 the shard's ingest stream
-- ARGV: 1 caller-history ttl (s), then groups of 7: bucket, dedup digest, row JSON, call-ref digest
--       ('' if none), call-ref value, caller-history key ('' if none), call mark
-- Returns the new entry ids in order. One script per shard and chunk replaces one XADD per event:
-- the client packs one command, and Redis parses it once.
--
-- FirstTimeCaller is decided here, in the same step that stores the call: a caller-history key (one
-- per counter and hashed caller number) keeps the mark of the caller's first call and is renewed by
-- every call, so a caller is new again only after the whole period without calling, and the same
-- call always gets the same answer however often it is delivered.
local caller_ttl = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 7 do
  local row = ARGV[i + 2]
  local caller_key, mark = ARGV[i + 5], ARGV[i + 6]
  if caller_key ~= '' then
    local first = redis.call('SET', caller_key, mark, 'NX', 'EX', caller_ttl)
    if not first then
      first = redis.call('GET', caller_key) == mark
      redis.call('EXPIRE', caller_key, caller_ttl)
    end
    row = string.sub(row, 1, -2) .. ',"FirstTimeCaller":"' .. (first and '1' or '0') .. '"}'
  end
  local ref = ARGV[i + 3]
  if ref == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', row)
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', row,
      'f', ref, 'v', ARGV[i + 4])
  end
end
return ids
