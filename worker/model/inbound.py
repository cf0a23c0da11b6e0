"""A call as a provider reported it, normalised but not yet routed: the input of :mod:`worker.intake.service`.

Every provider adapter (``ingest/providers/*``, ``ingest/pbx/*``) turns its own format into an
``InboundCall``; routing, FirstTimeCaller, the held stream and the producer only ever see this.
It is also what the held stream keeps, so a held call can be replayed without its provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import orjson

from worker.model.fields import FieldError
from worker.model.phones import normalize_phone

Direction = Literal["in", "out"]
ID_COLUMNS = ("ClientId", "UserId", "Yclid")
_DIGITS_RE = re.compile(r"^[0-9]{1,64}$")
_PAIR_SPLIT_RE = re.compile(r"[;&,|]")


def normalize_number(text: str | None, region: str | None = None) -> str | None:
    """E.164 ``+<digits>``, else None (the rule of ``PhoneNumber``; ``region`` reads national forms).

    Hidden or internal numbers (``anonymous``, ``101``) give None: the call is still a call, it just
    has no caller number.
    """
    return normalize_phone(text, region)


@dataclass(frozen=True, slots=True)
class InboundCall:
    """One finished call from a provider, with everything the Metrica row needs except the counter."""

    provider: str
    call_id: str
    started_at: int  # Unix seconds
    answered: bool
    tracking_number: str | None  # the number dialled (inbound) or shown (outbound), ``+digits``
    caller: str | None = None  # the customer's number, ``+digits``
    direction: Direction = "in"
    talk: int | None = None
    hold: int | None = None
    call_tracker_url: str | None = None
    ids: dict[str, str] = field(default_factory=dict)  # ClientId / UserId / Yclid
    columns: dict[str, Any] = field(default_factory=dict)  # other CallEvent columns (generic: URL, Price, ...)
    note: str = ""  # why an identifier the provider sent was not usable
    # The client account whose credential brought the call (worker/intake/ownership.py); None for an
    # operator credential (the deployment's own, reaching every counter). Not part of ``to_json``:
    # the held stream keeps it in a field of its own, so entries stay readable by the release before.
    owner: str | None = None

    def with_ids(self, ids: Mapping[str, str]) -> InboundCall:
        return replace(self, ids={**self.ids, **{k: v for k, v in ids.items() if v}}, note="")

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["owner"]
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, data: bytes | str, owner: str | None = None) -> InboundCall:
        raw = orjson.loads(data)
        raw.pop("owner", None)
        return cls(**raw, owner=owner)

    @property
    def tracking_key(self) -> str:
        """What identifies the call before it has a counter (the held stream's repeat guard)."""
        return f"{self.provider}\x1f{self.call_id}"


def extract_identifiers(source: Mapping[str, Any], fields: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Identifiers found in a provider's event, per the configured ``{column: source field}`` map.

    A source value of ``k=v`` pairs (``ClientId=123;Yclid=456``, as a CDR ``userfield`` often holds)
    gives the value of the pair named like the column; a plain value is taken whole. Values that
    break the column's rule are left out and named in the returned note.
    """
    ids: dict[str, str] = {}
    problems: list[str] = []
    for column, path in fields.items():
        value = _lookup(source, path)
        if value is None or value == "":
            continue
        text = str(value).strip()
        if "=" in text:
            pairs = {}
            for item in _PAIR_SPLIT_RE.split(text):
                name, _, val = item.partition("=")
                pairs[name.strip().lower()] = val.strip()
            text = pairs.get(column.lower(), "")
            if not text:
                continue
        error = check_identifier(column, text)
        if error is None:
            ids[column] = text
        else:
            problems.append(f"{column} from {path} {error.message}")
    return ids, "; ".join(problems)


def check_identifier(column: str, value: str) -> FieldError | None:
    """The identifier rules of :class:`worker.model.calls.CallEvent`, for one value."""
    if column in ("ClientId", "Yclid") and not _DIGITS_RE.match(value):
        return FieldError(column, "digits", "must be digits only")
    if column == "UserId" and (len(value) > 256 or any(ch in value for ch in "\r\n\x00")):
        return FieldError(column, "one_line", "must be one line of at most 256 characters")
    return None


def _lookup(source: Mapping[str, Any], path: str) -> Any:
    """``source[path]``, or a dotted path into nested objects (``customer.id``)."""
    if path in source:
        return source[path]
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, str | int) and not isinstance(node, bool) else None
