"""One line and an exit status for what an operator can fix: no traceback for an unreachable Redis.

Exit statuses: 0 done; 1 refused (bad input, an unknown counter, number or account: a
``click.ClickException``); 2 wrong usage (click's own) or invalid settings (``load_settings``);
3 Redis unreachable (:class:`Unavailable`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click


class Unavailable(click.ClickException):
    """Redis cannot be reached: exit status 3."""

    exit_code = 3


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def _mapped(error: Exception) -> click.ClickException | None:
    """The one-line error for ``error``, or None for an error that is a bug (its traceback stays)."""
    # Only a module already imported can have raised: redis is never imported here for nothing.
    redis_exc = sys.modules.get("redis.exceptions")
    if redis_exc is not None and isinstance(error, redis_exc.ConnectionError | redis_exc.TimeoutError):
        # redis-py names host:port (or the socket path), never the URL's password.
        return Unavailable(f"redis: unreachable: {_first_line(str(error)) or type(error).__name__}")
    return None


@contextmanager
def one_line() -> Iterator[None]:
    """Turn an unreachable Redis into one line on stderr and exit status 3."""
    try:
        yield
    except click.ClickException:
        raise
    except Exception as error:
        mapped = _mapped(error)
        if mapped is None:
            raise
        raise mapped from None
