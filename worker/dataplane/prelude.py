"""The Lua prelude every script starts with: key builders generated from the key table, then the shared
helpers of ``lua/prelude.lua`` (period, bucket, the bucketed hashes' ``put``, batch ids).

``K.<accessor>(prefix, parts...)`` builds the same name as the Python accessor of that row of
:data:`worker.dataplane.templates.TABLE`, from the shard's prefix (``<ns>:{sN}``): ``K.buffer(p, bucket)``
is ``Keys.buffer(shard, bucket)``. Scripts name no key by hand; tests/test_dataplane.py runs each builder
in Redis and compares it with the accessor.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from worker.dataplane.templates import LUA_KEYS, SHARD_PREFIX, KeyDef

LUA_DIR = Path(__file__).with_name("lua")


def _builder(key: KeyDef) -> str:
    rest = key.template.removeprefix(SHARD_PREFIX)
    pieces = ["prefix"]
    for literal, part in re.findall(r"([^<]*)(?:<([a-z]+)>)?", rest):
        if literal:
            pieces.append(f"'{literal}'")
        if part:
            pieces.append(part)
    params = ", ".join(["prefix", *key.parts])
    return f"function K.{key.accessor}({params}) return {' .. '.join(pieces)} end"


@cache
def prelude() -> str:
    """The prelude's text: ``local K`` (key builders) and ``local DP`` (shared helpers)."""
    builders = "\n".join(_builder(key) for key in LUA_KEYS if key.template.startswith(SHARD_PREFIX))
    helpers = (LUA_DIR / "prelude.lua").read_text(encoding="utf-8")
    return f"-- key builders (worker/dataplane/templates.py)\nlocal K = {{}}\n{builders}\n{helpers}"
