-- xadd_many.lua: append many accepted events to one shard's ingest stream in one command.
-- KEYS: 1 the shard's ingest stream
-- ARGV: groups of 5: bucket, dedup digest, row JSON, call-ref digest ('' if none), call-ref value
-- Returns the new entry ids in order. One script per shard and chunk replaces one XADD per event:
-- the client packs one command, and Redis parses it once.
local ids = {}
for i = 1, #ARGV, 5 do
  local ref = ARGV[i + 3]
  if ref == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', ARGV[i + 2])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 'd', ARGV[i + 1], 'r', ARGV[i + 2],
      'f', ref, 'v', ARGV[i + 4])
  end
end
return ids
