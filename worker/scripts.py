"""The Lua scripts in ``worker/lua``, read once and registered once per Redis client."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

_DIR = Path(__file__).with_name("lua")


@cache
def source(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """Registered scripts for one client; each call uses EVALSHA and reloads after a Redis restart."""

    def __init__(self, redis: Redis) -> None:
        def register(name: str) -> Script:
            return redis.register_script(source(name))

        self.drain = register("drain")
        self.begin_upload = register("begin_upload")
        self.record_upload = register("record_upload")
        self.record_status = register("record_status")
        self.quarantine = register("quarantine")
        self.end_attempt = register("end_attempt")
        self.release_lock = register("release_lock")
        self.quota_acquire = register("quota_acquire")
        self.lease = register("lease")
        self.xadd_many = register("xadd_many")
        self.first_caller = register("first_caller")
