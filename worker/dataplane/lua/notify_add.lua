-- notify_add.lua: record one webhook event once; its id is the idempotency key ("final:<batch>:<status>",
-- "held:<entry id>"), so an event already waiting, delivered (kept in the sent index) or dead is not
-- recorded again, however often the sweep sees its batch.
-- KEYS: 1 outbox (hash id -> JSON)  2 pending (zset id -> next dispatch ms)  3 sent (zset id -> ms)  4 dead (hash)
-- ARGV: 1 event id  2 event JSON
-- Returns 1 when recorded, 0 when it was known.
if redis.call('ZSCORE', KEYS[3], ARGV[1]) or redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
