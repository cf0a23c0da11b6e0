"""The data plane's contract: the Lua prelude and the Python side agree, in a real Redis (EVAL).

Every script starts with the prelude (worker/dataplane/prelude.py); here it runs alone, with a one-line
body, and its answers for random inputs are compared with worker/dataplane/marks.py and ids.py: the
bucket and field of a digest, the periods of a time, batch ids (and those round-trip through the parser),
marks written per hash (DP.put, DP.finish) where dedup_slot puts them and read back per hash (DP.prefetch,
DP.get), and every key the prelude builds against the Python accessor of the same row of the key table.
"""

from __future__ import annotations

import base64
import inspect
import random
import re
from typing import Any

import pytest
from redis import Redis

from worker.dataplane.ids import BatchId, batch_id, batch_nonce, batch_tail, parse_batch_id, shard_of_batch
from worker.dataplane.keys import Keys
from worker.dataplane.marks import dedup_periods, dedup_slot
from worker.dataplane.prelude import prelude
from worker.dataplane.scripts import source
from worker.dataplane.templates import KEYS, LUA_KEYS, SHARD_PREFIX
from worker.intake.held import reason_head

SEED = random.randrange(1 << 30)


def run(redis: Redis, body: str, *args: Any) -> Any:
    return redis.eval(f"{prelude()}\n{body}", 0, *args)


def digest(rng: random.Random) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(12)).decode()


def test_bucket_and_field_agree_for_random_digests(redis: Redis) -> None:
    rng = random.Random(SEED)
    cases = [(digest(rng), rng.choice([1, 7, 1024, 4096, rng.randrange(1, 1 << 20)])) for _ in range(500)]
    body = """local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = DP.bucket(ARGV[i], tonumber(ARGV[i + 1]))
  out[#out + 1] = DP.field(ARGV[i])
end
return out"""
    answers = run(redis, body, *[v for case in cases for v in case])
    for i, (text, buckets) in enumerate(cases):
        assert (int(answers[2 * i]), answers[2 * i + 1]) == dedup_slot(text, buckets), (SEED, text, buckets)


def test_periods_agree_for_random_times(redis: Redis) -> None:
    rng = random.Random(SEED)
    cases = [
        (rng.randrange(0, 4_000_000_000_000), rng.randrange(0, 400 * 86_400), rng.randrange(1, 40)) for _ in range(500)
    ]
    cases += [(86_400_000 * day - edge, 86_400 * 30, 8) for day in (8, 16, 20_000) for edge in (0, 1)]
    body = """local out = {}
for i = 1, #ARGV, 3 do
  local period, oldest = DP.periods(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
  out[#out + 1] = period
  out[#out + 1] = oldest
end
return out"""
    answers = run(redis, body, *[v for case in cases for v in case])
    for i, (now_ms, ttl, days) in enumerate(cases):
        periods = dedup_periods(now_ms, ttl, days)
        assert (answers[2 * i], answers[2 * i + 1]) == (periods[0], periods[-1]), (SEED, now_ms, ttl, days)


def test_batch_ids_are_built_alike_and_round_trip(redis: Redis) -> None:
    rng = random.Random(SEED)
    ids = [
        BatchId(batch_nonce()[:8], rng.randrange(0, 1024), rng.randrange(1, 10**12), batch_nonce()) for _ in range(50)
    ]
    ids.append(BatchId("abc123", 3, 17))  # sealed before issue 13: no nonce
    tails = [batch_tail(b.seq, b.nonce) if b.nonce else str(b.seq) for b in ids]
    lua_tails = run(
        redis, "return {DP.batch_tail(ARGV[1], ARGV[2]), DP.batch_tail(tonumber(ARGV[1]), ARGV[2])}", 42, "abc"
    )
    assert lua_tails == [batch_tail(42, "abc")] * 2
    body = """local out = {}
for i = 1, #ARGV, 3 do out[#out + 1] = DP.batch_id(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return out"""
    built = run(redis, body, *[v for b, tail in zip(ids, tails, strict=True) for v in (b.epoch, b.shard, tail)])
    for parts, tail, lua_id in zip(ids, tails, built, strict=True):
        assert lua_id == batch_id(parts.epoch, parts.shard, tail) == str(parts)
        assert parse_batch_id(lua_id) == parts
        assert shard_of_batch(lua_id) == parts.shard
    for bad in ("", "CT", "CTabcS1B", "CTabcS1B2R", "CTABCS1B2", "xCTabcS1B2"):
        with pytest.raises(ValueError, match="not a batch id"):
            parse_batch_id(bad)


def test_reason_heads_are_taken_alike(redis: Redis) -> None:
    reasons = [
        "",
        "no_identifier",
        "no_identifier (the note)",
        "unknown_number  two spaces",
        " leading",
        "a b c",
        "é ü",
    ]
    body = "local out = {} for i = 1, #ARGV do out[i] = DP.reason_head(ARGV[i]) end return out"
    assert run(redis, body, *reasons) == [reason_head(r) for r in reasons]


def _lua_builds(key: Any, keys: Keys) -> tuple[str, list[str], str]:
    """(prefix, parts for K.<accessor>, the Python accessor's name) for sample inputs of one row."""
    shard = 5
    sample: dict[str, Any] = {
        "bucket": "4242:calls:ClientId/1f",
        "id": batch_id("ep0ch", shard, "12R" + "n" * 10),
        "p": 2_437,
        "b": 913,
        "hash": "AbCd-_Ef12345678",
        "ctr": 4242,
        "number": "+79990001122",
    }
    parts = [sample[name] for name in key.parts]
    method = getattr(keys, key.accessor)
    params = list(inspect.signature(method).parameters)
    expected = method(shard, *parts) if params[0] == "shard" else method(*parts)
    if params[0] == "counter_id":
        shard = keys.shard_of(sample["ctr"])
    return keys.prefix(shard), [str(v) for v in parts], expected


def test_every_key_the_prelude_builds_is_the_accessors(redis: Redis) -> None:
    keys = Keys("ns7", 16)
    rows = [key for key in LUA_KEYS if key.template.startswith(SHARD_PREFIX)]
    assert rows == list(LUA_KEYS)
    for key in rows:
        prefix, parts, expected = _lua_builds(key, keys)
        assert run(redis, f"return K.{key.accessor}(unpack(ARGV))", prefix, *parts) == expected, key.template


# What a sample call passes for a parameter whose value is a literal of the template.
_LITERALS = {
    ("rate", "what"): "ctr",
    ("notify", "name"): "outbox",
    ("console", "what"): "fails",
    ("pool_live", "what"): "a",
}
_NOT_KEYS = {"namespace", "shards", "shard_of", "prefix", "all_pattern"}


def _pattern(template: str, namespace: str) -> re.Pattern[str]:
    text = re.escape(template.replace("<ns>", "\0")).replace("\0", re.escape(namespace))
    text = text.replace(re.escape("{sN}"), r"\{s[0-9]+\}").replace(re.escape("*"), ".*")
    return re.compile(re.sub(r"<[a-z]+>", "[^:]+", text) + "$")


def test_every_accessor_is_a_row_of_the_table_and_builds_its_template() -> None:
    keys = Keys("ns7", 16)
    accessors = {name for name in dir(Keys) if not name.startswith("_")} - _NOT_KEYS
    assert accessors == {key.accessor for key in KEYS}
    for name in sorted(accessors):
        member = getattr(keys, name)
        if callable(member):
            args: list[Any] = []
            for param in inspect.signature(member).parameters.values():
                literal = _LITERALS.get((name, param.name))
                if param.name == "batch_id":
                    args.append(batch_id("ep0ch", 3, "9Rabc"))
                else:
                    args.append(literal or (7 if param.annotation in ("int", int) else "x1"))
            member = member(*args)
        templates = [key.template for key in KEYS if key.accessor == name]
        assert any(_pattern(t, "ns7").match(member) for t in templates), (name, member, templates)


def test_every_script_starts_with_the_prelude_after_its_flags_line() -> None:
    text = source("begin_upload")
    assert text.startswith("#!lua flags=allow-oom\n" + prelude())
    assert source("drain").startswith(prelude())
    assert "':" not in source("replay").removeprefix(prelude())  # no key named by hand


def test_marks_put_in_one_run_are_where_python_computes_them_and_are_read_back_in_the_next(
    redis: Redis, namespace: str
) -> None:
    """DP.put writes its fields at DP.finish (one HSET per hash) into the hash and field dedup_slot names;
    DP.prefetch (one HMGET per hash) and DP.get read them back, and DP.get sees a put of the same run."""
    rng = random.Random(SEED)
    keys = Keys(namespace, 2)
    digests = [digest(rng) for _ in range(300)]
    now_ms = int(redis.time()[0]) * 1000  # the hashes expire from their period on
    body = """local h = DP.hashes(ARGV[1], K.dedup_hash, K.dedup_sizes(ARGV[1]), tonumber(ARGV[2]), 86400 * 22, 8, 7)
local digests = {unpack(ARGV, 4)}
if ARGV[3] == 'put' then
  for i = 1, #digests do DP.put(h, digests[i], 'v' .. i) end
  local seen = {}
  for i = 1, #digests do seen[i] = DP.get(h, digests[i]) end
  DP.finish(h)
  return seen
end
DP.prefetch(h, {unpack(digests, 1, #digests - 1)})
local out = {}
for i = 1, #digests do out[i] = DP.get(h, digests[i]) or false end
return out"""
    prefix = keys.prefix(0)
    assert run(redis, body, prefix, now_ms, "put", *digests[:200]) == [f"v{i + 1}" for i in range(200)]
    period = dedup_periods(now_ms, 86_400 * 22, 8)[0]
    for i, text in enumerate(digests[:200]):
        bucket, name = dedup_slot(text, 7)
        assert redis.hget(keys.dedup_hash(0, period, bucket), name) == f"v{i + 1}", (SEED, text)
    # The next run: 200 of them prefetched, the last one read alone; the other 100 were never put.
    later = [*digests[100:], digests[0]]
    answers = run(redis, body, prefix, now_ms + 86_400_000, "get", *later)
    assert answers == [f"v{i + 101}" for i in range(100)] + [None] * 100 + ["v1"], SEED
