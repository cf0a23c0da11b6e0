"""What Redis itself can do to the pipeline, for the chaos scenarios of issue 13.

* (a) ``aof_tail``: Redis on ``appendfsync everysec`` is SIGKILLed and its AOF's tail cut by hand,
  as a host crash loses the last second (the calls accepted in it are lost, nothing else);
* (b) ``snapshot``: Redis is restored from a copy of its AOF taken earlier in the run (everything
  after the copy is forgotten: batch sequence numbers, dedup marks, records, the redbeat lock), once
  the pipeline had settled; ``snapshot_unsettled``: the copy is taken with work in flight, so calls of
  batches uploaded after it are back in the restored stream and buffers. In both, the uploads the
  restore forgot are seen at Metrica (worker/delivery/restore.py): their shards are held, nothing is
  doubled while held, and the harness confirms as an operator would; after that, at most the rows of
  the forgotten uploads are doubled (none when the backup had settled);
* (c) ``maxmemory``: Redis gets a ``maxmemory`` just above its use: producers are refused at the
  watermark (ingestion would answer 503) until the pipeline has drained and memory is freed;
* (d) ``forget``: the emulator forgets a share of the uploads it stored (404 on status, gone from
  the list): reconcile quarantines them as ``missing_at_metrica``, and the operator's replay looks
  them up by comment and sends them again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, cast

from standalone.redis_server import RedisServer

SCENARIOS = ("kills", "aof_tail", "snapshot", "snapshot_unsettled", "maxmemory", "forget")
RESTORES = ("snapshot", "snapshot_unsettled")


def aof_dir(server: RedisServer) -> Path:
    return server.data_dir / "appendonlydir"


def aof_path(server: RedisServer) -> Path:
    """Redis 7's multi-part AOF directory, or Redis 6's single ``appendonly.aof``."""
    return aof_dir(server) if aof_dir(server).exists() else server.data_dir / "appendonly.aof"


def last_incr_file(server: RedisServer) -> Path:
    """The AOF part that receives new writes (Redis 7: the last ``*.incr.aof``; Redis 6: the file)."""
    if not aof_dir(server).exists():
        return server.data_dir / "appendonly.aof"
    files = sorted(aof_dir(server).glob("*.incr.aof"), key=lambda p: int(p.name.split(".")[-3]))
    if not files:
        raise RuntimeError(f"no incremental AOF file in {aof_dir(server)}")
    return files[-1]


def wait_fsync() -> None:
    """``appendfsync everysec``: what was written more than a second ago is on disk."""
    time.sleep(1.3)


def cut_aof_tail(server: RedisServer, keep_bytes: int) -> int:
    """SIGKILL Redis and cut its AOF after ``keep_bytes`` (the lost second); Redis loads a truncated
    tail (``aof-load-truncated yes``). Returns the bytes cut; raises unless some were."""
    server.kill()
    path = last_incr_file(server)
    size = path.stat().st_size
    if size <= keep_bytes:
        raise RuntimeError(f"nothing to cut: the AOF holds {size} bytes, {keep_bytes} are to be kept")
    with path.open("r+b") as handle:
        handle.truncate(keep_bytes)
    server.start()
    return size - keep_bytes


def take_snapshot(server: RedisServer, client: Any, target: Path) -> None:
    """Rewrite the AOF, let it reach the disk, and copy it: a backup taken now."""
    client.bgrewriteaof()
    deadline = time.monotonic() + 60
    while True:
        info = cast(dict[str, Any], client.info("persistence"))
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the AOF rewrite did not finish")
        time.sleep(0.1)
    wait_fsync()
    shutil.rmtree(target, ignore_errors=True)
    source = aof_path(server)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)
        shutil.copy2(source, target / source.name)


def restore_snapshot(server: RedisServer, source: Path) -> None:
    """SIGKILL Redis, put the backup in place of its AOF, start it again."""
    server.kill()
    current = aof_path(server)
    if current.is_dir():
        shutil.rmtree(current)
        shutil.copytree(source, current)
    else:
        shutil.copy2(source / current.name, current)
    server.start()


def forgotten_uploads(rt: Any, uploads: list[dict[str, Any]]) -> tuple[int, int]:
    """(uploads, rows) at Metrica whose batch the restored Redis has no record of: what a restore forgot."""
    pipe = rt.redis.pipeline(transaction=False)
    for upload in uploads:
        pipe.exists(rt.keys.batch(str(upload["comment"])))
    gone = [u for u, known in zip(uploads, pipe.execute(), strict=True) if not known]
    return len(gone), sum(int(u.get("source_quantity") or 0) for u in gone)


def confirm_restores(rt: Any) -> list[int]:
    """The operator's part after a restore: every held shard confirmed (``ctl restore confirm --all``)."""
    from worker.delivery import restore, restore_hold

    held = sorted(restore_hold.held_shards(rt))
    for shard in held:
        restore.confirm(rt, shard)
    return held
