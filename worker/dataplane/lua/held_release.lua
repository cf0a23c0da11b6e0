-- held_release.lua: delete held entries and take each one off its owner's count.
-- KEYS: 1 the held stream  2 the per-owner counts hash (same slot: tag {held})
-- ARGV: the entry ids
-- Entries of before issue 22 have no owner field: they were never counted, so nothing is taken off.
-- Returns how many entries existed.
local deleted = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    local fields = found[1][2]
    local owner = nil
    for i = 1, #fields, 2 do
      if fields[i] == 'owner' then owner = fields[i + 1] end
    end
    redis.call('XDEL', KEYS[1], id)
    deleted = deleted + 1
    if owner then
      if redis.call('HINCRBY', KEYS[2], owner, -1) <= 0 then redis.call('HDEL', KEYS[2], owner) end
    end
  end
end
return deleted
