"""The Celery application: built by ``create_app`` from explicit settings, never at import time.

Configured for at-least-once work: late acks, tasks requeued when their worker dies, prefetch of
one, a visibility timeout far above the longest task, and periodic tasks that expire. Every task is
safe to run twice, since each only says "look at batch X" and the state lives in Redis.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from celery import Celery, current_app, signals
from kombu import Queue
from redis.exceptions import RedisError

from config.logging import configure_logging, quiet_due_tasks
from config.settings import Settings
from worker.beat import CalltrackBeatScheduler
from worker.dataplane.keys import Keys
from worker.errors import StoreConfigError
from worker.runtime import Runtime
from worker.store import check_durability, connect_data, pin_shards

# Two queues, consumed round-robin by every worker: a backlog of uploads (and their retries) can
# never starve the drain and reconcile ticks, which expire if they wait too long.
PERIODIC_QUEUE = "calltrack.periodic"
UPLOAD_QUEUE = "calltrack.upload"
# RabbitMQ closes a channel whose delivery stays unacknowledged past its consumer_timeout (30 min by
# default): the task would run again while it still runs. The longest task must stay below it.
RABBITMQ_CONSUMER_TIMEOUT_SECONDS = 1800
log = structlog.get_logger(__name__)
# Webhook deliveries (issue 19) wait on their own queue, consumed by their own worker pool
# (CALLTRACK_WORKER_QUEUES=notify; the main pool runs with =main): a slow receiver never delays uploads or ticks.
NOTIFY_QUEUE = "calltrack.notify"
TASK_MODULES = ["tasks.pipeline", "tasks.accounts", "tasks.notify", "tasks.setup"]


class CalltrackCelery(Celery):
    """A Celery app that carries its settings and hands each process its own ``Runtime``."""

    settings: Settings
    transport: httpx.BaseTransport | None = None
    _runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        rt = self._runtime
        if rt is None or rt.pid != os.getpid():
            rt = self._runtime = Runtime(self.settings, transport=self.transport)
        return rt


def queue_names(settings: Settings) -> tuple[str, str, str]:
    """(periodic, upload, notify) queue names: on RabbitMQ prefixed with the namespace (a vhost is shared
    the way a Redis is; on Redis kombu's ``global_keyprefix`` separates namespaces)."""
    names = (PERIODIC_QUEUE, UPLOAD_QUEUE, NOTIFY_QUEUE)
    if settings.broker_is_amqp:
        return tuple(f"{settings.namespace}.{name}" for name in names)  # type: ignore[return-value]
    return names


def broker_config(settings: Settings) -> dict[str, Any]:
    """Broker URL, transport options and queues: a single Redis, or RabbitMQ with quorum queues.

    Redis: unacknowledged messages come back after the visibility timeout, so it is set far above the
    longest task. RabbitMQ has no visibility timeout: an unacknowledged delivery returns only when its
    channel closes (worker lost) or the server's ``consumer_timeout`` passes, which must stay above the
    longest task (checked here). Quorum queues are replicated and durable; Celery then turns off global
    QoS by itself (``worker_detect_quorum_queues``), keeping prefetch 1 per consumer.
    """
    keys = Keys(settings.namespace, settings.shards)
    longest = settings.upload_lock_seconds
    periodic, upload, notify = queue_names(settings)
    if settings.broker_is_amqp:
        if longest >= RABBITMQ_CONSUMER_TIMEOUT_SECONDS:
            raise StoreConfigError(
                f"CALLTRACK_UPLOAD_LOCK_SECONDS={longest} reaches RabbitMQ's default consumer_timeout "
                f"({RABBITMQ_CONSUMER_TIMEOUT_SECONDS} s): lower it, or raise consumer_timeout and this limit"
            )
        quorum = {"x-queue-type": "quorum"}
        return {
            "broker_url": settings.broker_url,
            "broker_transport_options": {"confirm_publish": True},
            "task_queues": [
                Queue(periodic, routing_key=periodic, durable=True, queue_arguments=quorum),
                Queue(upload, routing_key=upload, durable=True, queue_arguments=quorum),
                Queue(notify, routing_key=notify, durable=True, queue_arguments=quorum),
            ],
            "task_default_queue": periodic,
            "task_routes": task_routes(upload, notify),
            "worker_detect_quorum_queues": True,
        }
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {
            "global_keyprefix": keys.celery_prefix,
            # Far above the longest task (an upload is capped below the lock lease), so a slow
            # task is never handed to a second worker while the first still runs.
            "visibility_timeout": max(3600, longest * 10),
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
        },
        "task_queues": [Queue(periodic), Queue(upload), Queue(notify)],
        "task_default_queue": periodic,
        "task_routes": task_routes(upload, notify),
    }


def task_routes(upload: str, notify: str) -> dict[str, dict[str, str]]:
    """Uploads on their queue; every webhook task, the periodic sweep too, on the webhooks' queue, so the
    sweep's work for a client with many final batches never holds the processes drain and upload run in
    (issue 22: measured in docs/benchmarks.md, *Fairness*)."""
    return {
        "calltrack.upload_batch": {"queue": upload},
        "calltrack.notify_webhook": {"queue": notify},
        "calltrack.notify_sweep": {"queue": notify},
    }


def periodic(task: str, interval: float) -> dict[str, Any]:
    """A beat entry: every ``interval`` seconds, expiring after two intervals (at least 2 s) so a
    backlog of missed runs is dropped instead of run all at once."""
    return {"task": task, "schedule": interval, "options": {"expires": max(interval * 2, 2.0)}}


def celery_config(settings: Settings) -> dict[str, Any]:
    keys = Keys(settings.namespace, settings.shards)
    upload_limit = settings.upload_lock_seconds
    return {
        **broker_config(settings),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_hijack_root_logger": False,
        # Task events cost a message per task state; Flower switches them on (enable_events) for as
        # long as it runs, so workers need not send them otherwise.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_annotations": {
            # A delivery ends by its own deadline (webhook_timeout); this backstop kills one that does not
            # (a DNS look-up that hangs) on the prefork pool, so a webhook never holds a worker for long.
            "calltrack.notify_webhook": {
                "time_limit": settings.webhook_task_time_limit,
                "soft_time_limit": settings.webhook_task_time_limit - 5,
            },
            # A stuck upload is killed (prefork pool) before its counter lock lapses, so no request of a
            # stale uploader can still be in flight when the next one looks for its upload.
            "calltrack.upload_batch": {
                "time_limit": max(1, int(upload_limit * 0.9)),
                "soft_time_limit": max(1, int(upload_limit * 0.8)),
            },
            # Counter setup has its own deadline (checked between its requests; this soft limit is the
            # backstop for one request that hangs): a slow settings API never holds an upload.
            "calltrack.counter_setup": {
                "time_limit": settings.counter_setup_deadline_seconds + 10,
                "soft_time_limit": settings.counter_setup_deadline_seconds + 5,
            },
        },
        # One active beat across the fleet: redbeat keeps the schedule in Redis behind a lock, so
        # extra beat processes wait as hot standbys.
        "beat_scheduler": "worker.beat:CalltrackBeatScheduler",
        "redbeat_redis_url": settings.beat_redis_url,
        # Its own options (redbeat stops borrowing the broker's): a hung Redis fails a tick instead of
        # blocking it for ever (the tick then retries; a long outage shows in the liveness probe).
        "redbeat_redis_options": {"socket_timeout": 30, "socket_connect_timeout": 5},
        "redbeat_key_prefix": keys.redbeat_prefix,
        "redbeat_lock_timeout": settings.beat_lock_seconds,
        "beat_max_loop_interval": max(1, min(5, settings.beat_lock_seconds // 3)),
        "beat_schedule": {
            name: periodic(f"calltrack.{name}", interval)
            for name, interval in (
                ("drain", settings.drain_interval),
                ("reconcile", settings.reconcile_interval),
                ("token_upkeep", settings.token_check_interval),
                ("notify_sweep", settings.webhook_sweep_interval),
            )
        },
    }


def create_app(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> CalltrackCelery:
    """A configured app; ``transport`` lets tests route Metrica requests elsewhere."""
    app = CalltrackCelery("calltrack", set_as_current=False, include=TASK_MODULES)
    app.settings = settings
    app.transport = transport
    app.config_from_object(celery_config(settings))
    return app


# --- process-level hooks -------------------------------------------------------------------------
# Celery fires these in whichever process runs the app; each reads the settings off the app.


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = getattr(current_app, "settings", None)
    if isinstance(settings, Settings):
        configure_logging(settings)
        quiet_due_tasks(current_app.conf.beat_schedule or {})  # a drain a second: its line at debug


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


# --- heartbeats (issue 6: worker/ops/health.py) ------------------------------------------------------
_heartbeats: list[Any] = []


def _start_heartbeat(app: Any, role: str, node: str, alive: Callable[[], bool] | None = None) -> Any:
    settings = getattr(app, "settings", None)
    if not isinstance(settings, Settings):
        return None
    from worker.ops.health import Heartbeat  # noqa: PLC0415 - the health module imports this one's deps

    heartbeat = Heartbeat(settings, role, node, alive=alive).start()
    _heartbeats.append(heartbeat)
    return heartbeat


def refuse_another_shard_count(settings: object) -> None:
    """Exit with one line when this process's CALLTRACK_SHARDS is not the deployment's pinned one,
    or Redis cannot give the producer durability asked for (``aof`` before Redis 7.2)."""
    if not isinstance(settings, Settings):
        return
    client = connect_data(settings)
    try:
        pin_shards(client, Keys(settings.namespace, settings.shards))
        check_durability(client, settings.producer_durability)
    except StoreConfigError as error:
        sys.stderr.write(f"calltrack: {error}\n")
        raise SystemExit(2) from None
    except RedisError:
        pass  # Redis not up yet: the producers and drains check again on first use
    finally:
        client.close()


@signals.worker_init.connect
def _worker_shards(sender: Any = None, **_: Any) -> None:
    refuse_another_shard_count(getattr(getattr(sender, "app", None), "settings", None))


@signals.worker_init.connect
def _select_queues(sender: Any = None, **_: Any) -> None:
    """CALLTRACK_WORKER_QUEUES: the main pool leaves webhook deliveries alone; the notify pool takes only them."""
    app = getattr(sender, "app", None)
    settings = getattr(app, "settings", None)
    if app is None or not isinstance(settings, Settings) or settings.worker_queues == "all":
        return
    notify = queue_names(settings)[2]
    if settings.worker_queues == "notify":
        app.amqp.queues.select([notify])
    else:
        app.amqp.queues.deselect([notify])


@signals.beat_init.connect
def _beat_shards(sender: Any = None, **_: Any) -> None:
    refuse_another_shard_count(getattr(getattr(sender, "app", None), "settings", None))


@signals.worker_ready.connect
def _worker_heartbeat(sender: Any = None, **_: Any) -> None:
    _start_heartbeat(getattr(sender, "app", None), "worker", str(getattr(sender, "hostname", "worker")))


@signals.worker_ready.connect
def _import_env_accounts(sender: Any = None, **_: Any) -> None:
    """Today's CALLTRACK_* tokens and provider secrets become the registry's ``env`` account (idempotent);
    the environment tokens' logins are learned; unreadable accounts are named (worker/accounts/envimport.py)."""
    app = getattr(sender, "app", None)
    if isinstance(app, CalltrackCelery) and isinstance(getattr(app, "settings", None), Settings):
        from worker.accounts.envimport import start  # noqa: PLC0415

        try:
            start(app.runtime().accounts, app.settings)
        except Exception as error:  # never keep a worker from starting: the variables still work
            structlog.get_logger(__name__).error("env_accounts_import_failed", error=type(error).__name__)


@signals.beat_init.connect
def _beat_heartbeat(sender: Any = None, **_: Any) -> None:
    """The beat's heartbeat goes on only while its scheduler sends due tasks (or stands by)."""
    app, node = getattr(sender, "app", None), f"beat@{socket.gethostname()}"
    scheduler = getattr(sender, "scheduler", None)
    if isinstance(scheduler, CalltrackBeatScheduler):
        scheduler.heartbeat = _start_heartbeat(app, "beat", node, scheduler.sending)  # stopped with the beat
    else:
        _start_heartbeat(app, "beat", node)


@signals.worker_shutdown.connect
def _stop_heartbeats(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()
