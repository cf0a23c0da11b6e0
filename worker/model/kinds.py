"""Upload kinds and identifier types: what differs between calls, offline conversions and chats.

Everything downstream of the producer (buffers, batches, uploads, reconciliation) is keyed by a
``Bucket`` of (counter, kind, identifier type) and reads its columns and endpoints from here, so
another kind is a new ``KindSpec``, not a new pipeline.

Metrica documents two transports: the unified ``offline_conversions/upload`` (``type`` BASIC, CALLS or
CHATS; uploads listed and read under ``uploadings``, each with its ``type``) and the older per-kind
endpoints (``upload_calls``, ``uploading/{id}``; none for chats). A kind names the
endpoints of each transport it has; ``KindSpec.endpoints`` picks one (``metrica_legacy_endpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UploadKind(StrEnum):
    """What a file holds; each kind has its own Metrica endpoints and columns."""

    CALLS = "calls"
    CONVERSIONS = "conversions"
    CHATS = "chats"


class IdType(StrEnum):
    """The visitor identifier a file is keyed by; Metrica wants exactly one per file."""

    CLIENT_ID = "CLIENT_ID"
    USER_ID = "USER_ID"
    YCLID = "YCLID"
    PURCHASE_ID = "PURCHASE_ID"
    #: A chats file carries any identifiers a row has (none: the chat is stored unattributed).
    ANY = "ANY"

    @property
    def column(self) -> str:
        return _ID_COLUMNS[self]


_ID_COLUMNS = {
    IdType.CLIENT_ID: "ClientId",
    IdType.USER_ID: "UserId",
    IdType.YCLID: "Yclid",
    IdType.PURCHASE_ID: "PurchaseId",
    IdType.ANY: "",
}


_BASE = "/management/v1/counter/{counter}/offline_conversions"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The three requests of one kind on one transport: post a file, read one upload, list uploads."""

    upload: str
    status: str
    list: str
    upload_type: str | None = None  # the unified upload's ``type`` parameter
    #: The unified list holds every kind; only items of this ``type`` are the kind's (no type: BASIC).
    list_type: str | None = None


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Endpoints and CSV columns of one upload kind."""

    kind: UploadKind
    id_types: tuple[IdType, ...]
    columns: tuple[str, ...]  # every non-identifier column, in file order (chats: identifiers too)
    unified: Endpoints | None = None
    legacy: Endpoints | None = None

    def endpoints(self, legacy: bool = False) -> Endpoints:
        """The transport's endpoints: unified where the reference documents it, unless ``legacy``."""
        first, second = (self.legacy, self.unified) if legacy else (self.unified, self.legacy)
        chosen = first or second
        assert chosen is not None, f"{self.kind} has no endpoints"
        return chosen

    def header(self, id_type: IdType, present: set[str]) -> list[str]:
        """The file's columns: the identifier, then the known columns that some row carries."""
        known = [c for c in self.columns if c in present]
        return known if id_type is IdType.ANY else [id_type.column, *known]


CALLS = KindSpec(
    kind=UploadKind.CALLS,
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
    unified=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="CALLS",
        list_type="CALLS",
    ),
    legacy=Endpoints(f"{_BASE}/upload_calls", f"{_BASE}/calls_uploading/{{upload_id}}", f"{_BASE}/calls_uploadings"),
)

CONVERSIONS = KindSpec(
    kind=UploadKind.CONVERSIONS,
    id_types=(IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID, IdType.PURCHASE_ID),
    columns=("Target", "DateTime", "Price", "Currency"),
    unified=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="BASIC",
        list_type="BASIC",
    ),
    # The list path is shared, and holds every kind: filtered by type on both transports.
    legacy=Endpoints(f"{_BASE}/upload", f"{_BASE}/uploading/{{upload_id}}", f"{_BASE}/uploadings", list_type="BASIC"),
)

CHATS = KindSpec(
    kind=UploadKind.CHATS,
    id_types=(IdType.ANY,),
    columns=(
        "ClientID",
        "UserID",
        "Yclid",
        "PurchaseID",
        "DateTime",
        "ChatPlatform",
        "ChatUsername",
        "ChatUserID",
        "PhoneNumber",
        "Answered",
        "Tag",
    ),
    unified=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="CHATS",
        list_type="CHATS",
    ),
)

SPECS: dict[UploadKind, KindSpec] = {
    UploadKind.CALLS: CALLS,
    UploadKind.CONVERSIONS: CONVERSIONS,
    UploadKind.CHATS: CHATS,
}


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
