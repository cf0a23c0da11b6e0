"""The data plane's transactions and scripts on the local 3-master Redis Cluster (issue 17): each runs in
one slot, on the master that owns it; quota keys spread over logins; the shard pin holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from redis import RedisCluster

from config.settings import Settings
from tests.test_accounts import SECRET, registry, spec
from worker.dataplane.keys import Keys
from worker.dataplane.scripts import run_many
from worker.delivery.quota import Purpose, QuotaGate
from worker.errors import ShardCountError
from worker.intake.routing import Route, RoutingTable
from worker.runtime import Runtime
from worker.store import pin_shards


def test_the_cluster_client_the_default_shards_and_the_pin(cluster_settings: Callable[..., Settings]) -> None:
    settings = cluster_settings()
    rt = Runtime(settings)
    assert isinstance(rt.redis, RedisCluster)
    pin_shards(rt.redis, rt.keys)
    with pytest.raises(ShardCountError):
        pin_shards(rt.redis, Keys(settings.namespace, settings.shards + 1))
    rt.close()
    defaults = Settings(_env_file=None, redis_cluster=True, broker_url="amqp://guest:guest@127.0.0.1:5672//",
                        beat_redis_url="redis://127.0.0.1:6379/0")  # fmt: skip
    assert defaults.shards == 128 and defaults.broker_is_amqp
    with pytest.raises(ValueError, match="CALLTRACK_BROKER_URL"):
        Settings(_env_file=None, redis_cluster=True)


def test_account_registry_transactions_run_on_a_cluster(cluster_settings: Callable[..., Settings]) -> None:
    reg = registry(cluster_settings)
    assert reg.put(spec()).outcomes == {"acme": "created"}
    assert reg.token_for(101) == SecretStr(SECRET)
    reg.sync([spec("acme", (101, 202)), spec("beta", (303,), token="y0_othertoken-abcdef-654321")])
    assert reg.owner_id(202) == "acme" and reg.owner_id(303) == "beta"


def test_routing_writes_pools_in_their_own_slots(cluster_settings: Callable[..., Settings]) -> None:
    rt = Runtime(cluster_settings())
    table = RoutingTable(rt.redis, rt.keys)
    # Dynamic numbers of counters on different shards (different slots, usually different masters).
    routes = [Route(f"+7495000000{i}", 100 + i, kind="dynamic") for i in range(8)]
    assert table.add(routes) == 8
    assert {rt.keys.shard_of(r.counter_id) for r in routes} != {rt.keys.shard_of(100)}
    for route in routes:
        assert rt.redis.zscore(rt.keys.pool(route.counter_id), route.number) == 0
    table.add([Route("+74950000000", 107, kind="dynamic")])  # moves to another counter's pool
    assert rt.redis.zscore(rt.keys.pool(100), "+74950000000") is None
    assert rt.redis.zscore(rt.keys.pool(107), "+74950000000") == 0
    assert table.remove([r.number for r in routes]) == 8
    assert all(rt.redis.zcard(rt.keys.pool(r.counter_id)) == 0 for r in routes)
    rt.close()


def test_quota_permits_per_login_slot_and_run_many_across_masters(cluster_settings: Callable[..., Settings]) -> None:
    rt = Runtime(cluster_settings(quota_parallel_per_login=1))
    gate = QuotaGate(rt)
    token = SecretStr("y0_quota-token-abcdef-123456")
    login = rt.accounts.login_of(token)
    assert rt.keys.quota_inflight(login).split("}")[0].endswith(login)  # {q:<login>}, not one {q} slot
    with gate.permit(token, Purpose.UPLOAD):
        assert rt.redis.zcard(rt.keys.quota_inflight(login)) == 1
        assert rt.redis.zcard(rt.keys.quota_rate(rt.settings.egress_id)) == 1
    assert rt.redis.zcard(rt.keys.quota_inflight(login)) == 0
    # Scripts of many shards in one call: grouped by master, each reply in order; WAIT's reply the weakest.
    calls: list[Any] = [
        (rt.scripts.take_lock, [f"{rt.keys.prefix(shard)}:probe"], ["holder", 1000]) for shard in range(16)
    ]
    replies = run_many(rt.redis, calls, [["WAIT", 1, 1000]])
    assert len(replies) == 17 and not any(isinstance(r, Exception) for r in replies), replies
    assert replies[-1] >= 1  # every master's writes reached its replica
    rt.close()
