"""In-memory uploads, indexed by id and by (counter, kind); status is derived from the clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from emulator.clock import format_iso
from emulator.validation import CALLS, CHATS, CONVERSIONS, ParsedFile

STEPS = ("UPLOADED", "EXPORTED", "MATCHED")
TERMINAL_OK = "PROCESSED"
TERMINAL_FAILED = "LINKAGE_FAILURE"


#: The ``type`` an upload carries in the reference's answers (``BASIC`` is an offline conversion).
TYPES = {CALLS: "CALLS", CONVERSIONS: "BASIC", CHATS: "CHATS"}


@dataclass
class Upload:
    """One accepted upload; rows stay as CSV text until inspected."""

    id: int
    counter: int
    kind: str
    login: str
    created: float
    comment: str | None
    new_goal_name: str | None
    file: ParsedFile

    def status(self, now: float, step_seconds: float) -> str:
        """UPLOADED -> EXPORTED -> MATCHED -> PROCESSED (or LINKAGE_FAILURE), one step per period."""
        step = int((now - self.created) // step_seconds) if now > self.created else 0
        if step < len(STEPS):
            return STEPS[step]
        return TERMINAL_OK if self.file.matched else TERMINAL_FAILED

    def to_api(self, now: float, step_seconds: float) -> dict[str, Any]:
        """The ``uploading`` object exactly as Metrica answers it."""
        body: dict[str, Any] = {
            "id": self.id,
            "create_time": format_iso(self.created),
            "source_quantity": self.file.source_quantity,
            "line_quantity": self.file.line_quantity,
            "comment": self.comment,
            "client_id_type": self.file.client_id_type,
            "status": self.status(now, step_seconds),
        }
        if self.kind == CALLS:
            body["static_calls_quantity"] = self.file.static_calls
            body["dynamic_calls_quantity"] = self.file.line_quantity - self.file.static_calls
        body["type"] = TYPES[self.kind]
        return body

    def rows(self) -> list[dict[str, str]]:
        """Accepted rows as dicts keyed by the file's column names."""
        header = self.file.header
        return [dict(zip(header, row, strict=False)) for row in self.file.iter_rows() if row]

    def to_admin(self, now: float, step_seconds: float, with_rows: bool) -> dict[str, Any]:
        body = self.to_api(now, step_seconds)
        body.update(
            counter=self.counter,
            kind=self.kind,
            login=self.login,
            new_goal_name=self.new_goal_name,
            columns=list(self.file.header),
            rejected=[{"line": r.line, "column": r.column, "reason": r.reason} for r in self.file.rejections],
            joined_quantity=self.file.joined_quantity,
            unjoined=dict(self.file.unjoined),
        )
        if with_rows:
            body["rows"] = self.rows()
        return body


class Store:
    """All uploads. Ids increase globally and survive :meth:`clear`, like real Metrica ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_id: dict[int, Upload] = {}
        self._by_scope: dict[tuple[int, str], list[Upload]] = {}
        self.row_count = 0

    def add(
        self,
        *,
        counter: int,
        kind: str,
        login: str,
        created: float,
        comment: str | None,
        new_goal_name: str | None,
        file: ParsedFile,
    ) -> Upload:
        upload = Upload(next(self._ids), counter, kind, login, created, comment, new_goal_name, file)
        self._by_id[upload.id] = upload
        self._by_scope.setdefault((counter, kind), []).append(upload)
        self.row_count += file.line_quantity
        return upload

    def forget(self, upload_id: int) -> None:
        """Lose an upload (the ``forget_share`` fault): 404 on status, gone from lists and rows."""
        upload = self._by_id.pop(upload_id, None)
        if upload is not None:
            self._by_scope[(upload.counter, upload.kind)].remove(upload)
            self.row_count -= upload.file.line_quantity

    def get(self, counter: int, kinds: str | Iterable[str], upload_id: int) -> Upload | None:
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        upload = self._by_id.get(upload_id)
        if upload is None or upload.counter != counter or upload.kind not in kinds:
            return None
        return upload

    def page(self, counter: int, kinds: str | Iterable[str], limit: int, offset: int) -> list[Upload]:
        """Newest first over one or more kinds, ``offset`` uploads skipped, at most ``limit`` returned."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        scopes = [self._by_scope[(counter, k)] for k in kinds if (counter, k) in self._by_scope]
        if len(scopes) <= 1:
            uploads = scopes[0] if scopes else []
            end = len(uploads) - offset
            if end <= 0:
                return []
            return uploads[max(0, end - limit) : end][::-1]
        merged = heapq.merge(*(reversed(s) for s in scopes), key=lambda u: -u.id)
        return list(itertools.islice(merged, offset, offset + limit))

    def all(self, counter: int | None = None, kind: str | None = None) -> list[Upload]:
        """Oldest first."""
        if counter is not None and kind is not None:
            return list(self._by_scope.get((counter, kind), []))
        return [
            u
            for u in self._by_id.values()
            if (counter is None or u.counter == counter) and (kind is None or u.kind == kind)
        ]

    def counters(self) -> list[int]:
        return sorted({counter for counter, _ in self._by_scope})

    def __len__(self) -> int:
        return len(self._by_id)

    def clear(self) -> None:
        self._by_id.clear()
        self._by_scope.clear()
        self.row_count = 0
