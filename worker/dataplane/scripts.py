"""The Lua scripts in ``worker/dataplane/lua``, read once and registered once per Redis client: the one
loader. Each script is sent with the prelude in front (:mod:`worker.dataplane.prelude`: the key builders
``K`` and the shared helpers ``DP``), after its ``#!lua`` line when it has one."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from redis import Redis, RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.dataplane.prelude import LUA_DIR, prelude


@cache
def source(name: str) -> str:
    """The script as sent to Redis: its ``#!lua`` line (if any), the prelude, then its text."""
    text = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    shebang = ""
    if text.startswith("#!"):
        shebang, text = text.split("\n", 1)
        shebang += "\n"
    return f"{shebang}{prelude()}\n-- {name}.lua\n{text}"


def server_major(redis: Redis) -> int:
    """The Redis server's major version (7 when it cannot be asked now)."""
    try:
        return int(str(redis.info("server").get("redis_version", "7")).split(".")[0])
    except (RedisError, ValueError):
        return 7


class Scripts:
    """Registered scripts for one client; each call uses EVALSHA and reloads after a Redis restart.

    Scripts that free memory start with ``#!lua flags=allow-oom`` (Redis 7 runs them above
    ``maxmemory``); Redis 6 knows no such line, so it is left out there (and the guarantee that
    they run at OOM with it: run Redis 7 in production).
    """

    def __init__(self, redis: Redis) -> None:
        strip_flags = server_major(redis) < 7

        def register(name: str) -> Script:
            text = source(name)
            if strip_flags and text.startswith("#!"):
                text = text.split("\n", 1)[1]
            return redis.register_script(text)

        self.drain = register("drain")
        self.begin_upload = register("begin_upload")
        self.record_upload = register("record_upload")
        self.record_status = register("record_status")
        self.quarantine = register("quarantine")
        self.end_attempt = register("end_attempt")
        self.release_lock = register("release_lock")
        self.acquire_lock = register("acquire_lock")
        self.mark_missing = register("mark_missing")
        self.take_lock = register("take_lock")
        self.quota_acquire = register("quota_acquire")
        self.quota_rate = register("quota_rate")
        self.lease = register("lease")
        self.release = register("release")
        self.hold = register("hold")
        self.held_release = register("held_release")
        self.held_recount = register("held_recount")
        self.xadd_many = register("xadd_many")
        self.notify_add = register("notify_add")
        self.notify_breaker = register("notify_breaker")
        self.replay = register("replay")
        self.adopt = register("adopt")
        self.discard = register("discard")


ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]


def run_many(redis: Redis, calls: Sequence[ScriptCall], then: Sequence[Sequence[Any]] = ()) -> list[Any]:
    """Run several script calls in one round trip; each reply or the exception it raised, in order.

    ``then``: commands sent after the scripts on the same connection (``WAIT``, ``WAITAOF``: they
    only cover the writes of their own connection); their replies follow the scripts' replies.

    redis-py's pipelines ask ``SCRIPT EXISTS`` before every execution that holds a script (one more
    round trip each time); here each call is a plain ``EVALSHA``, and only calls that Redis answered
    ``NOSCRIPT`` (it restarted or was flushed: they did not run) are sent again after loading.
    """
    if isinstance(redis, RedisCluster):
        return _run_many_cluster(redis, calls, then)
    if len(calls) == 1 and not then:
        script, keys, args = calls[0]
        try:
            return [script(keys=keys, args=args)]
        except Exception as error:
            return [error]
    replies: list[Any] = [None] * len(calls)
    tail: list[Any] = []
    pending = list(range(len(calls)))
    for _ in range(2):
        pipe = redis.pipeline(transaction=False)
        for command in [*(evalsha_command(calls[i]) for i in pending), *then]:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        answers = pipe.execute(raise_on_error=False)
        tail = answers[len(pending) :]
        missing = take_round(replies, pending, answers)
        if not missing:
            break
        for script in unloaded(calls, missing):
            redis.script_load(script.script)
        pending = missing
    return replies + tail


def evalsha_command(call: ScriptCall) -> tuple[Any, ...]:
    """A script call as the ``EVALSHA`` command :func:`run_many` and its asynchronous twin send."""
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def take_round(replies: list[Any], pending: Sequence[int], answers: Sequence[Any]) -> list[int]:
    """Store the answer of each of the ``pending`` calls (``answers`` in their order, the ``then``
    commands' after them) in ``replies``; the calls Redis answered ``NOSCRIPT``: they did not run."""
    missing = []
    for i, answer in zip(pending, answers[: len(pending)], strict=True):
        replies[i] = answer
        if isinstance(answer, NoScriptError):
            missing.append(i)
    return missing


def unloaded(calls: Sequence[ScriptCall], missing: Sequence[int]) -> list[Script]:
    """The distinct scripts of the calls Redis answered ``NOSCRIPT``: to load before sending them again."""
    return list({calls[i][0].sha: calls[i][0] for i in missing}.values())


def _run_many_cluster(cluster: RedisCluster, calls: Sequence[ScriptCall], then: Sequence[Sequence[Any]]) -> list[Any]:
    """``run_many`` on a cluster: the calls grouped by the master of their first key's slot, each group one
    round trip on that node's own client, followed by the ``then`` commands on the same connection (a
    ``WAIT`` covers the writes of its own connection only). Each ``then`` reply is the weakest of the
    nodes' (an error, else the smallest count), so ``WAIT 1`` passes only when every node's writes reached
    a replica. A call whose slot moved (a failover) answers its error: nothing ran, resubmitting is safe.
    """
    groups: dict[str, list[int]] = {}
    nodes: dict[str, Redis] = {}
    for i, (_, keys, _) in enumerate(calls):
        node = cluster.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
        groups.setdefault(node.name, []).append(i)
        nodes[node.name] = cast(Redis, node.redis_connection)
    replies: list[Any] = [None] * len(calls)
    tails: list[list[Any]] = []
    for name, indexes in groups.items():
        try:
            answers = run_many(nodes[name], [calls[i] for i in indexes], then)
        except Exception as error:  # the node is down: every call of it failed, nothing ran there
            answers = [error] * (len(indexes) + len(then))
        if any(_slot_map_stale(answer) for answer in answers):
            # A failover or a resharding: learn the new masters so the caller's retry goes there.
            with contextlib.suppress(Exception):
                cluster.nodes_manager.initialize()
        for i, answer in zip(indexes, answers, strict=False):
            replies[i] = answer
        tails.append(answers[len(indexes) :])
    return replies + [_weakest([tail[j] for tail in tails]) for j in range(len(then))]


def _slot_map_stale(answer: Any) -> bool:
    if isinstance(answer, ConnectionError | TimeoutError | RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(answer, ResponseError) and str(answer).startswith(("MOVED", "CLUSTERDOWN", "TRYAGAIN", "ASK"))


def _weakest(answers: list[Any]) -> Any:
    for answer in answers:
        if isinstance(answer, Exception):
            return answer
    if answers and isinstance(answers[0], list):
        return [min(int(a[k]) for a in answers) for k in range(len(answers[0]))]
    return min((int(a) for a in answers), default=0)
