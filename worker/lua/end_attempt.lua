-- end_attempt.lua: note that this attempt's request is over without a recorded upload.
-- KEYS: 1 batch record   ARGV: 1 fencing token  2 '1' when Metrica surely stored nothing  3 error text
-- With ARGV[2] = '1' (a quota or other answer that stored nothing) the batch goes back to SEALED,
-- so the next attempt posts at once; otherwise it stays UPLOADING and the next attempt first looks
-- for the batch in Metrica's list. Returns 1 when applied, 0 when a newer attempt owns the batch.
if redis.call('HGET', KEYS[1], 'state') ~= 'UPLOADING' or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'ended', ARGV[1], 'last_error', ARGV[3])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'state', 'SEALED') end
return 1
