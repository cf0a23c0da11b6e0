"""The beat's scheduler: redbeat's, made to heal itself (issue 23). ``celery_config`` names it."""

from __future__ import annotations

import time
from typing import Any

import structlog
from redbeat import RedBeatScheduler  # type: ignore[import-untyped]
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis  # type: ignore[import-untyped]
from redis.exceptions import LockError, RedisError

log = structlog.get_logger(__name__)
# A beat that sent no due task for this many of its loop intervals is stalled: its liveness fails.
MISSED_TICKS = 3


class CalltrackBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler, surviving Redis forgetting its lock or its schedule (a restore, a failover).

    * The lock: redbeat blocks in ``beat_init`` until it holds the lock (a standby beat would start no
      heartbeat meanwhile) and ends the process when the lock vanishes. Here every tick first holds the
      lock: extends it, or takes it if free; while another beat holds it, this one stands by (sends
      nothing) and tries again next tick.
    * The schedule: each tick the holder checks that every static entry still has its hash and its
      place in the schedule's sorted set, and stores the missing ones again (``beat_schedule_restored``),
      so a restore or a deleted key stops the periodic tasks for one tick at most.
    * Redis unavailable (a restart, a failover): the tick sends nothing and the next one tries again;
      redbeat would end the process.
    * Liveness: :meth:`sending` says whether, within ``MISSED_TICKS`` of its loop's intervals, the beat
      sent a due task or, standing by, found the lock held by another beat; the beat's heartbeat is
      written only then (``worker/ops/health.py``), so a beat that holds the lock and sends nothing, or
      whose loop hangs, fails its liveness probe.
    """

    lock_key: str | None
    heartbeat: Any = None  # this beat's Heartbeat, started by the beat_init hook below

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.standing_by = True
        self.holding = False
        self.progress_at = time.monotonic()  # the last due task sent, or the last tick standing by
        statics = app.redbeat_conf.schedule or {}
        intervals = [e["schedule"] for e in statics.values() if isinstance(e.get("schedule"), float | int)]
        shortest = float(min(intervals, default=0.0))
        # Due tasks are sent at least every max(shortest interval, loop interval); three of those missed is a stall.
        self.stall_seconds = MISSED_TICKS * max(shortest, float(self.max_interval))
        self.beat_lock_key: str | None = self.lock_key
        self.lock_key = None  # redbeat's own beat_init hook would block on the lock; tick() takes it instead
        if self.beat_lock_key:
            client = get_redis(app)
            self.lock = client.lock(self.beat_lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            self.lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)  # extend *to* the timeout

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            if self.lock is not None and not self._hold_lock():
                self.standing_by = True
                self.progress_at = time.monotonic()
                return float(self.max_interval)
            self.standing_by = False
            self._restore_schedule()
            return float(super().tick(min=min, **kwargs))
        except RedisError as error:
            # Redis restarting or failing over: send nothing (no progress counted) and try again next
            # tick, instead of ending the process; a long outage shows in the liveness probe.
            log.warning("beat_redis_unavailable", error=type(error).__name__)
            return float(self.max_interval)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        self.progress_at = time.monotonic()
        return result

    def sending(self) -> bool:
        """True when this beat sent a due task, or stood by, within ``stall_seconds``."""
        return time.monotonic() - self.progress_at <= self.stall_seconds

    def close(self) -> None:
        """A clean stop: the heartbeat stops and removes its entry (as a worker's does), then redbeat
        releases the lock."""
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()  # stopping it again (worker_shutdown of an embedded beat) is harmless
        super().close()

    def _hold_lock(self) -> bool:
        held = self.holding
        if held:
            try:
                self.lock.extend(int(self.lock_timeout))
                return True
            except LockError:
                pass  # Redis forgot it, or another beat took it after it lapsed
        self.holding = bool(self.lock.acquire(blocking=False))
        if held:
            log.warning("beat_lock_lost", retaken=self.holding)
        elif self.holding:
            log.info("beat_lock_taken")
        return self.holding

    def _restore_schedule(self) -> None:
        conf = self.app.redbeat_conf
        statics: dict[str, Any] = conf.schedule or {}
        names = list(statics)
        client = get_redis(self.app)
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                key = self.Entry.generate_key(self.app, name)
                pipe.exists(key)
                pipe.zscore(conf.schedule_key, key)
            found = pipe.execute()
        missing = [n for i, n in enumerate(names) if not found[2 * i] or found[2 * i + 1] is None]
        if missing:
            self.update_from_dict({name: statics[name] for name in missing})
            client.sadd(conf.statics_key, *names)
            log.warning("beat_schedule_restored", entries=missing)
