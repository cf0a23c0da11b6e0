-- first_caller.lua: record calls in their callers' histories; 1 where the call is the caller's first.
-- KEYS: the caller-history keys, one per call (all in one shard's slot)
-- ARGV: 1 ttl (s), then one call mark per key
-- A key keeps the mark of the caller's first call; each call renews it for the whole period, so a
-- caller is "new" again only after that long without calling. The same call always gets the same
-- answer, however often it is delivered.
local ttl = tonumber(ARGV[1])
local answers = {}
for i = 1, #KEYS do
  local mark = ARGV[i + 1]
  local first = redis.call('SET', KEYS[i], mark, 'NX', 'EX', ttl)
  if first then
    answers[i] = 1
  else
    answers[i] = (redis.call('GET', KEYS[i]) == mark) and 1 or 0
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
return answers
