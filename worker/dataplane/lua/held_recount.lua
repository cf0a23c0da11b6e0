-- held_recount.lua: count the held stream's entries per reason's first word again, in one atomic step,
-- and replace the per-reason counts with them. hold.lua and held_release.lua keep the counts as entries
-- come and go; a recount puts right what they could not see (entries of a release before the counts,
-- a Redis restored from a backup). /metrics runs it when <ns>:{held}:recounted is absent (worker/intake/held.py).
-- KEYS: 1 the held stream  2 the per-reason counts hash  3 the recount marker (one slot: tag {held})
-- ARGV: 1 the marker's life in seconds
-- Returns the counts: reason word, count, reason word, count...
local counts, total = {}, 0
local start = '-'
while true do
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  if #page == 0 then break end
  for i = 1, #page do
    local fields, reason = page[i][2], ''
    for j = 1, #fields, 2 do
      if fields[j] == 'reason' then reason = fields[j + 1] end
    end
    local head = DP.reason_head(reason)
    counts[head] = (counts[head] or 0) + 1
    total = total + 1
  end
  start = '(' .. page[#page][1]
end
redis.call('DEL', KEYS[2])
local args = {}
for head, n in pairs(counts) do
  args[#args + 1] = head
  args[#args + 1] = n
end
for i = 1, #args, 1000 do
  redis.call('HSET', KEYS[2], unpack(args, i, math.min(i + 999, #args)))
end
redis.call('SET', KEYS[3], total, 'EX', tonumber(ARGV[1]))
return args
