"""structlog set-up, done once per process (the Celery ``setup_logging`` signal, or a CLI's start).

JSON lines when stderr is not a terminal, readable lines when it is. Context such as ``task_id``,
``counter_id`` and ``batch_id`` is bound through ``structlog.contextvars`` by the code that owns it.
A last processor scrubs every configured secret from every string value, as a backstop: the code
itself never passes tokens to a logger. uvicorn's loggers (``uvicorn``, ``uvicorn.error``) go through
the same renderer (the ingestion service starts uvicorn with ``log_config=None``), and the beat's
"Sending due task" line is lowered to debug for frequent entries (:func:`quiet_due_tasks`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import orjson
import structlog

from config.settings import Settings

REDACTED = "**redacted**"


class SecretScrubber:
    """Replaces any configured secret found in a log event's string values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self.scrub(value)
        return event

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def _json_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(settings: Settings, *, force_format: str | None = None, level: str | None = None) -> None:
    """Route structlog and the standard library (Celery, kombu, httpx, uvicorn) through one renderer.

    ``level`` overrides ``settings.log_level`` (the CLI logs warnings only unless ``-v``).
    """
    fmt = force_format or settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_json_dumps)
    )
    scrubber = SecretScrubber(settings.secret_values())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests capture events with structlog.testing.capture_logs(), and logging here
        # happens per batch, never per call.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            scrubber,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level)
    # uvicorn's own handlers would print plain text: its records go to the root handler here. Its
    # access logger keeps the propagation uvicorn gave it (off with access_log=False: the ingestion
    # service writes its own access line without the query string, ingest/accesslog.py).
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        if name != "uvicorn.access":
            uvicorn_logger.propagate = True
    # httpx logs every request line at INFO; keep it for DEBUG runs only.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# celery's scheduler and redbeat's each log "Scheduler: Sending due task <name> (<task>)" at INFO.
BEAT_LOGGERS = ("celery.beat", "redbeat.schedulers")
DUE_TASK_PREFIX = "Scheduler: Sending due task"
FREQUENT_SECONDS = 300.0


class DueTaskFilter(logging.Filter):
    """Lowers the beat's "Sending due task" line to DEBUG for the named (frequent) entries."""

    def __init__(self, frequent: Iterable[str]) -> None:
        super().__init__()
        self.frequent = frozenset(frequent)

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(DUE_TASK_PREFIX)):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if not args or args[0] not in self.frequent:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_due_tasks(schedule: Mapping[str, Mapping[str, Any]], *, under: float = FREQUENT_SECONDS) -> frozenset[str]:
    """Log the sending of entries due more often than every ``under`` seconds at debug; returns their names.

    A drain every second would otherwise write a line a second; rare entries (token upkeep) keep
    their info line, so a running beat still shows in the logs.
    """
    frequent = frozenset(
        name
        for name, entry in schedule.items()
        if isinstance(entry.get("schedule"), int | float) and float(entry["schedule"]) < under
    )
    for name in BEAT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, DueTaskFilter)]:
            logger.removeFilter(old)
        logger.addFilter(DueTaskFilter(frequent))
    return frequent
