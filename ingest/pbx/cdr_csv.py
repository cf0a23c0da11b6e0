"""Import Asterisk ``Master.csv``: once, or following the growing file, resuming where it stopped.

The position (byte offset after the last row Redis holds, and the file's inode) is kept in Redis
(``Keys.cdr_position``) and written only after the rows before it were stored, so a restart never
skips a row. A crash between storing a batch and writing the position sends that one batch again;
its calls repeat their ``uniqueid`` and are dropped downstream, so each row is stored once. A file
that was rotated (another inode) or truncated is read from its start.

Records are complete lines; a quoted field holding a newline keeps the record open until its
quote closes. A half-written last line is left for the next read.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import structlog
from redis import Redis

from ingest.input import InputError
from ingest.pbx.asterisk import AsteriskConfig, from_row, to_call
from worker.dataplane.keys import Keys
from worker.delivery.producer import dedup_digest
from worker.errors import ProducerError
from worker.failpoints import failpoint
from worker.intake.service import Intake
from worker.model.inbound import InboundCall

log = structlog.get_logger(__name__)
READ_CHUNK = 1 << 20


@dataclass(slots=True)
class ImportStats:
    rows: int = 0
    accepted: int = 0
    held: int = 0
    ignored: int = 0
    rejected: int = 0

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)


def split_records(data: bytes) -> tuple[list[bytes], int]:
    """Complete CSV records in ``data`` and the number of bytes they take (the rest is unfinished)."""
    records: list[bytes] = []
    start = consumed = 0
    quotes = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            break
        quotes += data.count(b'"', start, end)
        start = end + 1
        if quotes % 2 == 0:
            records.append(data[consumed:start])
            consumed = start
            quotes = 0
    return records, consumed


class CdrCsvImporter:
    """Reads one ``Master.csv`` into the intake, keeping its position in Redis."""

    def __init__(
        self,
        path: Path,
        intake: Intake,
        redis: Redis,
        keys: Keys,
        config: AsteriskConfig,
        columns: Sequence[str],
        *,
        source: str | None = None,
        batch_rows: int = 1000,
    ) -> None:
        self.path = path
        self.intake = intake
        self.redis = redis
        self.config = config
        self.columns = list(columns)
        self.batch_rows = batch_rows
        self.position_key = keys.cdr_position(dedup_digest(source or str(path.resolve())))
        self.stats = ImportStats()

    # --- Position --------------------------------------------------------------------------------
    def position(self) -> tuple[int, int]:
        raw = cast(dict[str, str], self.redis.hgetall(self.position_key))
        return int(raw.get("offset", 0)), int(raw.get("inode", 0))

    def save_position(self, offset: int, inode: int) -> None:
        self.redis.hset(self.position_key, mapping={"offset": offset, "inode": inode})

    # --- Reading ---------------------------------------------------------------------------------
    def import_available(self) -> int:
        """Store every complete row after the saved position; returns how many rows were read."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return 0
        with handle:
            info = os.fstat(handle.fileno())
            offset, inode = self.position()
            if inode != info.st_ino or offset > info.st_size:
                if offset:
                    log.warning("cdr_file_replaced", path=str(self.path), old_offset=offset)
                offset = 0
            handle.seek(offset)
            pending = b""
            read = 0
            while True:
                chunk = handle.read(READ_CHUNK)
                if not chunk:
                    break
                records, used = split_records(pending + chunk)
                pending = (pending + chunk)[used:]
                for start in range(0, len(records), self.batch_rows):
                    batch = records[start : start + self.batch_rows]
                    self._store(batch)
                    offset += sum(len(r) for r in batch)
                    failpoint("cdr_after_store")
                    self.save_position(offset, info.st_ino)
                    read += len(batch)
            return read

    def _store(self, records: list[bytes]) -> None:
        calls: list[InboundCall] = []
        for record in records:
            self.stats.rows += 1
            try:
                text = record.decode("utf-8", errors="replace")
                row = next(csv.reader(io.StringIO(text)), [])
                if not row:
                    continue
                result = to_call(from_row(self.columns, row), self.config)
            except (InputError, csv.Error) as error:
                self.stats.add("rejected")
                log.warning("cdr_row_rejected", path=str(self.path), error=str(error))
                continue
            if isinstance(result, str):
                self.stats.add("ignored")
            else:
                calls.append(result)
        for outcome in self.intake.accept(calls) if calls else []:
            self.stats.add(outcome.status)
            if outcome.status == "rejected":
                log.warning("cdr_row_rejected", path=str(self.path), error=outcome.reason)

    def run(self, *, follow: bool, poll_seconds: float = 1.0, stop: threading.Event | None = None) -> ImportStats:
        """Import what is there; with ``follow``, keep reading as the file grows until ``stop`` is set."""
        stop = stop or threading.Event()
        backoff = poll_seconds
        while not stop.is_set():
            try:
                self.import_available()
                backoff = poll_seconds
            except ProducerError as error:
                log.error("cdr_store_failed", path=str(self.path), error=str(error), retry_in=backoff)
                backoff = min(backoff * 2, 30.0)
                if not follow:
                    raise
            if not follow:
                break
            stop.wait(backoff)
        return self.stats
