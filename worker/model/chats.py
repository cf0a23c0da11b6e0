"""Chats: the third upload kind (a conversation in a messenger: Telegram, WhatsApp, Viber).

``ChatEvent`` is one row of Metrica's chats file (unified ``offline_conversions/upload?type=CHATS``):
the event time, the chat platform, at least one id of the chat partner (``ChatUsername``,
``ChatUserID`` or ``PhoneNumber``), any of Metrica's visitor ids (``ClientID``, ``UserID``, ``Yclid``,
``PurchaseID``: several may be given; with none the chat is stored unattributed), and optionally
whether it was answered and a tag. Column names are the chats data page's (chats-transfer-data); the
answered flag and the tag are taken as ``Answered`` and ``Tag`` and kept with the row, but never sent:
the reference page's names for them could not be confirmed (``KindSpec.withheld``, docs/metrica-api.md).
Repeats of a ``chat_id`` from the same ``source`` are dropped.
It rides the same streams, batches, quotas and reconciliation as calls and conversions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from worker.model.fields import (
    MAX_TEXT,
    DigitsId,
    FieldError,
    Flag,
    OneLine,
    Phone,
    Rejection,
    SourceId,
    SourceName,
    TimePolicy,
    UtcDateTime,
    validate_events,
)
from worker.model.kinds import Bucket, IdType, UploadKind
from worker.model.phones import PhoneRegions

#: The chat platforms Metrica's chats files name (lower case, as the reference writes them).
PLATFORMS = frozenset({"telegram", "whatsapp", "viber"})


class ChatEvent(BaseModel):
    """A chat with a customer, ready to become one row of a Metrica chats file."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True)

    counter_id: int = Field(gt=0, le=2**63 - 1, description="Metrica counter the chat belongs to.")
    chat_id: SourceId = Field(description="The chat service's own id of the chat; repeats are dropped.")
    source: SourceName = Field(default="api", description="Where the chat came from (a chat tracker's name).")
    date_time: UtcDateTime = Field(alias="DateTime")
    platform: str = Field(alias="ChatPlatform", description="telegram, whatsapp or viber.")
    chat_username: OneLine = Field(default=None, alias="ChatUsername", max_length=256)
    chat_user_id: OneLine = Field(default=None, alias="ChatUserID", max_length=256)
    phone_number: Phone = Field(default=None, alias="PhoneNumber")
    client_id: DigitsId = Field(default=None, validation_alias=AliasChoices("ClientID", "ClientId"))
    user_id: OneLine = Field(default=None, validation_alias=AliasChoices("UserID", "UserId"), max_length=256)
    yclid: DigitsId = Field(default=None, validation_alias=AliasChoices("Yclid", "YCLID"))
    purchase_id: OneLine = Field(
        default=None, validation_alias=AliasChoices("PurchaseID", "PurchaseId"), max_length=256
    )
    answered: Flag = Field(default=None, alias="Answered")
    tag: OneLine = Field(default=None, alias="Tag", max_length=MAX_TEXT)

    @field_validator("platform")
    @classmethod
    def _check_platform(cls, value: str) -> str:
        name = value.lower()
        if name not in PLATFORMS:
            raise ValueError(f"must be one of {', '.join(sorted(PLATFORMS))}")
        return name

    @model_validator(mode="after")
    def _needs_partner(self) -> Self:
        if not (self.chat_username or self.chat_user_id or self.phone_number):
            raise PydanticCustomError(
                "chat_partner_required", "at least one of ChatUsername, ChatUserID or PhoneNumber is required"
            )
        return self

    # --- Pipeline view -----------------------------------------------------------------------
    @property
    def bucket(self) -> Bucket:
        return Bucket(self.counter_id, UploadKind.CHATS, IdType.ANY)

    @property
    def source_id(self) -> str:
        return self.chat_id

    @property
    def dedup_source(self) -> str:
        """What makes two deliveries the same chat: counter, source and the source's chat id."""
        return f"chat\x1f{self.counter_id}\x1f{self.source}\x1f{self.chat_id}"

    def to_row(self) -> dict[str, str]:
        """The chat's CSV cells by Metrica's column names; absent optional columns are left out."""
        row = {"DateTime": str(int(self.date_time.timestamp())), "ChatPlatform": self.platform}
        for column, text in (
            ("ClientID", self.client_id),
            ("UserID", self.user_id),
            ("Yclid", self.yclid),
            ("PurchaseID", self.purchase_id),
            ("ChatUsername", self.chat_username),
            ("ChatUserID", self.chat_user_id),
            ("PhoneNumber", self.phone_number),
            ("Tag", self.tag),
        ):
            if text is not None:
                row[column] = text
        if self.answered is not None:
            row["Answered"] = "1" if self.answered else "0"
        return row


def check_chat_time(event: ChatEvent, now: datetime, policy: TimePolicy) -> list[FieldError]:
    """A chat must have happened (Metrica refuses future events) within the join window."""
    if event.date_time > now + policy.clock_skew:
        return [FieldError("DateTime", "not_in_future", "must not be in the future")]
    too_old = policy.too_old(event.date_time, now)
    return [too_old] if too_old else []


def validate_chats(
    raw_events: Iterable[object], now: datetime, policy: TimePolicy, regions: PhoneRegions | None = None
) -> tuple[list[tuple[int, ChatEvent]], list[Rejection]]:
    """Validate each chat; return (index, event) pairs accepted and the rejections."""
    context = (regions or PhoneRegions()).context()
    return validate_events(ChatEvent, raw_events, now, lambda event, at: check_chat_time(event, at, policy), context)
