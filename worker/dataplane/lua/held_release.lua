-- held_release.lua: delete held entries and take each one off its owner's and its reason's count.
-- KEYS: 1 the held stream  2 the per-owner counts hash  3 the per-reason counts hash (one slot: tag {held})
-- ARGV: the entry ids
-- Entries of before issue 22 have no owner field: they were never counted, so nothing is taken off.
-- A reason's count that reaches 0 (or below: an entry held by a release that did not count reasons,
-- until held_recount.lua recounts) loses its field.
-- Returns how many entries existed.
local deleted = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    local fields = found[1][2]
    local owner, reason = nil, ''
    for i = 1, #fields, 2 do
      if fields[i] == 'owner' then owner = fields[i + 1]
      elseif fields[i] == 'reason' then reason = fields[i + 1] end
    end
    redis.call('XDEL', KEYS[1], id)
    deleted = deleted + 1
    if owner then
      if redis.call('HINCRBY', KEYS[2], owner, -1) <= 0 then redis.call('HDEL', KEYS[2], owner) end
    end
    local head = DP.reason_head(reason)
    if redis.call('HINCRBY', KEYS[3], head, -1) <= 0 then redis.call('HDEL', KEYS[3], head) end
  end
end
return deleted
