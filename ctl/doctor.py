"""``ctl doctor``: is this deployment able to do its job? Configuration, Redis and its persistence,
each counter's token, the clocks, the fleet's heartbeats. Exit 1 when a check fails."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, cast

import click
import httpx
import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from config.settings import Settings, describe_error
from ctl.context import Context
from ctl.output import emit, json_option, local_time
from worker.accounts.health import problems
from worker.delivery import restore_hold
from worker.delivery.counter_setup import Readiness, readiness
from worker.delivery.quota import Purpose, QuotaGate
from worker.errors import CalltrackError, FormatVersionError
from worker.format import CURRENT, refuse_unknown
from worker.model.kinds import CALLS
from worker.ops.scrape import heartbeats
from worker.runtime import Runtime
from worker.store import cluster_nodes_health, is_cluster, memory

Status = Literal["ok", "warn", "fail"]
CLOCK_WARN_SECONDS = 5.0
CLOCK_FAIL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


def _settings(ctx: Context) -> tuple[Settings | None, Check]:
    if ctx.given_settings is not None:
        return ctx.given_settings, Check("configuration", "ok", "settings given")
    try:
        settings = Settings()
    except ValidationError as error:
        return None, Check("configuration", "fail", describe_error(error))
    return settings, Check("configuration", "ok", f"namespace {settings.namespace}, {settings.shards} shards")


def check_cluster(rt: Runtime) -> list[Check]:
    """On a Redis Cluster: every node says ``cluster_state:ok`` with all 16384 slots assigned and ok."""
    if not is_cluster(rt.redis):
        return []
    try:
        nodes = cluster_nodes_health(rt.redis)
    except RedisError as error:
        return [Check("redis cluster", "fail", f"{type(error).__name__}: cannot list the cluster's nodes")]
    bad = [f"{name}: {line}" for name, ok, line in nodes if not ok]
    if bad:
        return [Check("redis cluster", "fail", "; ".join(bad))]
    masters = sum(1 for name, _, _ in nodes if "(primary)" in name)
    line = nodes[0][2] if nodes else "no node"
    return [Check("redis cluster", "ok", f"{len(nodes)} nodes ({masters} masters) healthy; {line}")]


def check_redis(rt: Runtime) -> list[Check]:
    if is_cluster(rt.redis):
        return [*check_cluster(rt), check_memory(rt)]
    try:
        info = cast(dict[str, object], rt.redis.info("server"))
    except RedisError as error:
        return [Check("redis", "fail", f"{type(error).__name__}: cannot reach Redis at the configured URL")]
    checks = [Check("redis", "ok", f"Redis {info.get('redis_version', '?')} answers")]
    try:
        config = cast(dict[str, str], rt.redis.config_get("appendonly"))
        config |= cast(dict[str, str], rt.redis.config_get("appendfsync"))
        config |= cast(dict[str, str], rt.redis.config_get("maxmemory-policy"))
    except ResponseError:
        return [
            *checks,
            Check("redis persistence", "warn", "CONFIG is disabled here: check AOF and noeviction yourself"),
        ]
    if config.get("appendonly") != "yes":
        checks.append(
            Check("redis persistence", "fail", "appendonly is no: a Redis restart loses every call not yet uploaded")
        )
    elif config.get("appendfsync") == "no":
        checks.append(Check("redis persistence", "warn", "appendfsync no: a host crash can lose ~30 s of calls"))
    else:
        checks.append(Check("redis persistence", "ok", f"appendonly yes, appendfsync {config.get('appendfsync')}"))
    policy = config.get("maxmemory-policy", "")
    checks.append(
        Check("redis memory policy", "ok", "noeviction")
        if policy == "noeviction"
        else Check("redis memory policy", "fail", f"maxmemory-policy {policy}: Redis may evict queued calls")
    )
    return [*checks, check_memory(rt)]


def check_format(rt: Runtime) -> Check:
    """The data format Redis holds against this release's (worker/format.py; README, "Upgrading")."""
    try:
        found = refuse_unknown(rt.redis, rt.keys)
    except FormatVersionError as error:
        return Check("data format", "fail", str(error))
    if found is None:
        return Check("data format", "ok", f"none yet: the first process writes format {CURRENT}")
    if found == CURRENT:
        return Check("data format", "ok", f"format {found}, this release's")
    return Check(
        "data format",
        "warn",
        f"format {found}: stop the older release, then ./scripts/ctl migrate (README, 'Upgrading')",
    )


def check_memory(rt: Runtime) -> Check:
    """maxmemory is required; above the producers' watermark new calls are being refused."""
    reading = memory(rt.redis)
    watermark = rt.settings.producer_memory_watermark
    if reading.limit <= 0:
        return Check(
            "redis maxmemory",
            "fail",
            "maxmemory is not set: a full host gets Redis killed by the kernel instead of producers refused",
        )
    used = f"{reading.used / 2**20:.0f} MiB of {reading.limit / 2**20:.0f} MiB ({reading.share():.0%})"
    if reading.share() >= watermark:
        return Check(
            "redis maxmemory", "warn", f"{used}: above the producers' watermark {watermark:.0%}, calls refused"
        )
    return Check("redis maxmemory", "ok", f"{used}; producers stop at {watermark:.0%}")


def check_accounts(rt: Runtime) -> list[Check]:
    """Tokens of the account registry that Metrica refused, that expired or expire soon, by account."""
    try:
        found = problems(rt.redis, rt.keys, rt.settings.token_warning_days)
        accounts = int(rt.redis.hlen(rt.keys.accounts))
        unreadable = rt.accounts.unreadable()
    except RedisError as error:
        return [Check("accounts", "fail", f"cannot read the registry: {type(error).__name__}")]
    checks = [Check(f"account {p.account}", "warn" if p.state == "near_expiry" else "fail", p.line()) for p in found]
    for item in unreadable:
        detail = f"its token cannot be read ({item.reason}): the batches of counters {list(item.counters)} wait"
        checks.append(Check(f"account {item.account}", "fail", detail))
    if accounts and rt.settings.uses_emulator and rt.settings.metrica_base_url is None:
        detail = "no token variable is set, so uploads go to the emulator: set CALLTRACK_METRICA_BASE_URL"
        checks.append(Check("accounts", "warn", detail))
    return checks or [Check("accounts", "ok", f"{accounts} accounts, no token refused or near expiry")]


def check_tokens(rt: Runtime) -> list[Check]:
    counters = set(rt.settings.metrica_counter_tokens)
    try:
        for raw in cast(list[str], rt.redis.hvals(rt.keys.routing)):
            counters.add(int(orjson.loads(raw)["counter_id"]))
    except RedisError:
        pass
    if not counters:
        return [Check("metrica access", "warn", "no counter is configured (no counter token, no routing entry)")]
    where = "the emulator" if rt.settings.uses_emulator else rt.settings.api_base_url
    gate = QuotaGate(rt)
    checks = []
    ready = readiness(rt, counters)
    for counter in sorted(counters):
        token = rt.accounts.token_for(counter, removed_ok=True)
        name = f"counter {counter}"
        if token is None:
            checks.append(Check(name, "fail", _no_token(rt, counter)))
            continue
        try:
            with gate.permit(token, Purpose.POLL):
                rt.metrica.uploadings(CALLS, counter, token, limit=1)
        except (CalltrackError, RedisError) as error:
            checks.append(Check(name, "fail", f"the token cannot list its call uploads at {where}: {error}"))
            continue
        checks.append(Check(name, "ok", f"the token reaches its call uploads at {where}"))
        checks.append(_readiness(counter, ready.get(counter)))
    return checks


def _no_token(rt: Runtime, counter: int) -> str:
    snap = rt.accounts.snapshot()
    owner = snap.unreadable_counters.get(counter)
    if owner is not None:
        return f"account {owner}'s token cannot be read ({snap.unreadable[owner].reason}): its batches wait"
    if counter in snap.removed:
        return "removed from the account registry: its batches wait"
    return "no OAuth token (CALLTRACK_METRICA_TOKEN or _COUNTER_TOKENS)"


def _readiness(counter: int, found: Readiness | None) -> Check:
    name = f"counter {counter} setup"
    if found is None:
        return Check(name, "warn", f"not set up yet (done before its first upload, or: ctl counters setup {counter})")
    if not found.ready:
        return Check(name, "warn", "; ".join(found.problems()) + f" (ctl counters setup {counter})")
    joins = ", ".join(f"{kind} join from {when}" for kind, when in sorted(found.join_from.items()))
    return Check(name, "ok", f"offline-data options on; {joins or 'join thresholds unknown'}")


def check_clock(rt: Runtime) -> list[Check]:
    checks = []
    try:
        before = time.time()
        seconds, micros = rt.redis.time()
        local = (before + time.time()) / 2
        checks.append(_skew("clock vs Redis", local - (seconds + micros / 1e6)))
    except RedisError as error:
        checks.append(Check("clock vs Redis", "fail", f"{type(error).__name__}"))
    try:
        response = httpx.get(rt.settings.api_base_url, timeout=5)
        date = response.headers.get("date")
        if date:
            checks.append(_skew("clock vs Metrica", time.time() - parsedate_to_datetime(date).timestamp(), coarse=True))
        else:
            checks.append(Check("clock vs Metrica", "warn", "the API sent no Date header"))
    except httpx.HTTPError as error:
        checks.append(
            Check("clock vs Metrica", "fail", f"cannot reach {rt.settings.api_base_url}: {type(error).__name__}")
        )
    return checks


def _skew(name: str, skew: float, *, coarse: bool = False) -> Check:
    # A Date header has whole seconds: allow one more.
    size = abs(skew) - (1.0 if coarse else 0.0)
    text = f"{skew:+.1f} s"
    if size > CLOCK_FAIL_SECONDS:
        return Check(name, "fail", f"{text}: calls would be judged against the wrong time")
    if size > CLOCK_WARN_SECONDS:
        return Check(name, "warn", f"{text}: run NTP")
    return Check(name, "ok", text)


def check_fleet(rt: Runtime) -> list[Check]:
    try:
        beats = heartbeats(rt.redis, rt.keys)
    except RedisError:
        return []
    limit = rt.settings.heartbeat_interval * 3
    checks = []
    for role in ("worker", "beat"):
        alive = [b for b in beats if b.role == role and b.age <= limit]
        checks.append(
            Check(f"{role}s", "ok", f"{len(alive)} alive: {', '.join(b.node for b in alive)}")
            if alive
            else Check(f"{role}s", "warn", f"no {role} has sent a heartbeat in {limit:.0f} s")
        )
    return checks


def check_restore(rt: Runtime) -> list[Check]:
    """A shard held after a restore of Redis was detected fails until the operator confirms it."""
    held = restore_hold.held_shards(rt)
    if not held:
        return [Check("restore", "ok", "no restore detected")]
    return [
        Check(f"restore shard {shard}", "fail", f"held since {local_time(r.get('detected_at'))}: {r.get('why')} "
              f"(batch {r.get('evidence')} at Metrica); decide, then `ctl restore confirm {shard}`")
        for shard, r in held.items()
    ]  # fmt: skip


def check_secrets(settings: Settings) -> list[Check]:
    checks = []
    if settings.flower_password is None and not settings.flower_unauthenticated:
        checks.append(Check("flower", "warn", "CALLTRACK_FLOWER_PASSWORD is not set: Flower will not start"))
    elif settings.flower_password is None:
        checks.append(Check("flower", "warn", "Flower runs without authentication (CALLTRACK_FLOWER_UNAUTHENTICATED)"))
    else:
        checks.append(Check("flower", "ok", f"basic auth for {settings.flower_user}"))
    if settings.caller_hash_secret is None:
        checks.append(
            Check("caller hash", "warn", "CALLTRACK_CALLER_HASH_SECRET is not set: caller hashes are unkeyed")
        )
    return checks


@click.command()
@json_option
@click.pass_obj
def doctor(ctx: Context, as_json: bool) -> None:
    """Check the configuration, Redis persistence, each counter's token, the clocks and the fleet."""
    settings, first = _settings(ctx)
    checks = [first]
    if settings is not None:
        rt = Runtime(settings)
        try:
            checks += check_redis(rt)
            if checks[-1].name != "redis" or checks[-1].status != "fail":
                checks.append(check_format(rt))
                checks += check_tokens(rt)
                checks += check_accounts(rt)
                checks += check_clock(rt)
                checks += check_fleet(rt)
                checks += check_restore(rt)
            checks += check_secrets(settings)
        finally:
            rt.close()
    failed = [c for c in checks if c.status == "fail"]
    emit(
        {"ok": not failed, "checks": [asdict(c) for c in checks]},
        as_json=as_json,
        headers=("check", "status", "detail"),
        rows=[(c.name, c.status.upper(), c.detail) for c in checks],
    )
    if failed:
        raise SystemExit(1)
