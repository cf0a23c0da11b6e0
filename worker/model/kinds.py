"""Upload kinds and identifier types: what differs between calls and offline conversions.

Everything downstream of the producer (buffers, batches, uploads, reconciliation) is keyed by a
``Bucket`` of (counter, kind, identifier type) and reads its columns and endpoints from here, so a
second kind is a new ``KindSpec``, not a new pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UploadKind(StrEnum):
    """What a file holds; each kind has its own Metrica endpoints and columns."""

    CALLS = "calls"
    CONVERSIONS = "conversions"


class IdType(StrEnum):
    """The visitor identifier a file is keyed by; Metrica wants exactly one per file."""

    CLIENT_ID = "CLIENT_ID"
    USER_ID = "USER_ID"
    YCLID = "YCLID"
    PURCHASE_ID = "PURCHASE_ID"

    @property
    def column(self) -> str:
        return _ID_COLUMNS[self]


_ID_COLUMNS = {
    IdType.CLIENT_ID: "ClientId",
    IdType.USER_ID: "UserId",
    IdType.YCLID: "Yclid",
    IdType.PURCHASE_ID: "PurchaseId",
}


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Endpoints and CSV columns of one upload kind."""

    kind: UploadKind
    upload_path: str
    status_path: str
    list_path: str
    id_types: tuple[IdType, ...]
    columns: tuple[str, ...]  # every non-identifier column, in file order

    def header(self, id_type: IdType, present: set[str]) -> list[str]:
        """The file's columns: the identifier, then the known columns that some row carries."""
        return [id_type.column, *(c for c in self.columns if c in present)]


CALLS = KindSpec(
    kind=UploadKind.CALLS,
    upload_path="/management/v1/counter/{counter}/offline_conversions/upload_calls",
    status_path="/management/v1/counter/{counter}/offline_conversions/calls_uploading/{upload_id}",
    list_path="/management/v1/counter/{counter}/offline_conversions/calls_uploadings",
    id_types=(IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID),
    columns=(
        "DateTime",
        "StaticCall",
        "Price",
        "Currency",
        "PhoneNumber",
        "TalkDuration",
        "HoldDuration",
        "CallMissed",
        "Tag",
        "FirstTimeCaller",
        "URL",
        "CallTrackerURL",
    ),
)

CONVERSIONS = KindSpec(
    kind=UploadKind.CONVERSIONS,
    upload_path="/management/v1/counter/{counter}/offline_conversions/upload",
    status_path="/management/v1/counter/{counter}/offline_conversions/uploading/{upload_id}",
    list_path="/management/v1/counter/{counter}/offline_conversions/uploadings",
    id_types=(IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID, IdType.PURCHASE_ID),
    columns=("Target", "DateTime", "Price", "Currency"),
)

SPECS: dict[UploadKind, KindSpec] = {UploadKind.CALLS: CALLS, UploadKind.CONVERSIONS: CONVERSIONS}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One open buffer, and later one file: a counter, an upload kind and an identifier type."""

    counter_id: int
    kind: UploadKind
    id_type: IdType

    def encode(self) -> str:
        return f"{self.counter_id}:{self.kind.value}:{self.id_type.value}"

    @classmethod
    def decode(cls, text: str) -> Bucket:
        counter, kind, id_type = text.split(":")
        return cls(int(counter), UploadKind(kind), IdType(id_type))

    @property
    def spec(self) -> KindSpec:
        return SPECS[self.kind]
