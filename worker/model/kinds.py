"""Upload kinds and identifier types: what differs between calls, offline conversions and chats.

Everything downstream of the producer (buffers, batches, uploads, reconciliation) is keyed by a
``Bucket`` of (counter, kind, identifier type) and reads its columns and endpoints from here, so
another kind is a new ``KindSpec``, not a new pipeline.

Each kind has the endpoints Metrica's reference documents for it (docs/metrica-api.md names the page
of each): calls ``upload_calls``, ``calls_uploading/{id}``, ``calls_uploadings``; offline conversions
``upload``, ``uploading/{id}``, ``uploadings``; chats ``upload?type=CHATS``, ``uploadings/{id}``,
``uploadings``. The unified ``upload?type=CALLS|BASIC`` read under ``uploadings`` is used for calls and
conversions only when ``metrica_unified_endpoint`` asks for it: no page documents the columns, the status
path or the list entries of a ``type=CALLS`` upload. ``KindSpec.endpoints`` picks one.

Columns are the reference's names only. A column the model keeps but whose name the reference does not
confirm is ``withheld``: stored with the row (its place in the row's mask never moves, so rows sealed
by an earlier release still read), never written into a file.
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
    #: The shared ``uploadings`` list may hold other kinds: an item that carries a ``type`` other than
    #: this one is not the kind's; an item without ``type`` is kept (the reference does not say it has one).
    list_type: str | None = None


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Endpoints and CSV columns of one upload kind."""

    kind: UploadKind
    id_types: tuple[IdType, ...]
    columns: tuple[str, ...]  # every non-identifier column, in stored order (chats: identifiers too)
    documented: Endpoints
    #: The unified ``upload?type=...`` transport, used only on request (``metrica_unified_endpoint``);
    #: None where the documented endpoints already are the unified ones (chats).
    unified: Endpoints | None = None
    #: Columns stored with a row but never sent: the reference does not confirm their names.
    withheld: frozenset[str] = frozenset()

    def endpoints(self, unified: bool = False) -> Endpoints:
        """The documented endpoints, or the unified transport when ``unified`` asks for it (where it exists)."""
        return self.unified if unified and self.unified is not None else self.documented


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
    # Pages uploadCalls, findCallUploadingById, findAllCallUploadings: a list of calls only.
    documented=Endpoints(
        f"{_BASE}/upload_calls", f"{_BASE}/calls_uploading/{{upload_id}}", f"{_BASE}/calls_uploadings"
    ),
    unified=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="CALLS",
        list_type="CALLS",
    ),
)

CONVERSIONS = KindSpec(
    kind=UploadKind.CONVERSIONS,
    id_types=(IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID, IdType.PURCHASE_ID),
    columns=("Target", "DateTime", "Price", "Currency"),
    # Pages upload_1, findById_1, findAll_1 (no ``type``: BASIC is the default). The list path is the
    # chats' too (findAll_chats): filtered by ``type`` where items carry it.
    documented=Endpoints(
        f"{_BASE}/upload", f"{_BASE}/uploading/{{upload_id}}", f"{_BASE}/uploadings", list_type="BASIC"
    ),
    unified=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="BASIC",
        list_type="BASIC",
    ),
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
    # Pages upload_chats, findById_chats, findAll_chats.
    documented=Endpoints(
        f"{_BASE}/upload",
        f"{_BASE}/uploadings/{{upload_id}}",
        f"{_BASE}/uploadings",
        upload_type="CHATS",
        list_type="CHATS",
    ),
    # Stored by the model, never sent: the chats data page (chats-transfer-data) could not be read to
    # confirm these names (the chats page names the data: whether the chat was answered, a tag).
    withheld=frozenset({"Answered", "Tag"}),
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
