"""Asterisk CDRs (from AMI ``Cdr`` events or ``Master.csv`` rows) as :class:`InboundCall`.

Fields use the ``Master.csv`` names (``src``, ``dst``, ``start``, ``billsec``, ...); AMI events are
renamed with :data:`AMI_FIELDS`. Times are ``YYYY-MM-DD HH:MM:SS`` in the PBX's zone, or UTC with
``usegmtime=yes``. Answered when ``disposition`` is ``ANSWERED``; talk = ``billsec``, hold =
``duration - billsec`` (the whole ``duration`` of a missed call). No link to a call exists:
CallTrackerURL only from a configured template. Identifiers from the configured columns, usually
``userfield`` (``Set(CDR(userfield)=ClientId=...)`` in the dialplan).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from config.settings import Settings
from ingest.input import InputError, local_time, seconds
from worker.model.inbound import InboundCall, extract_identifiers, normalize_number

AMI_FIELDS = {
    "AccountCode": "accountcode",
    "Source": "src",
    "Destination": "dst",
    "DestinationContext": "dcontext",
    "CallerID": "clid",
    "Channel": "channel",
    "DestinationChannel": "dstchannel",
    "LastApplication": "lastapp",
    "LastData": "lastdata",
    "StartTime": "start",
    "AnswerTime": "answer",
    "EndTime": "end",
    "Duration": "duration",
    "BillableSeconds": "billsec",
    "Disposition": "disposition",
    "AMAFlags": "amaflags",
    "UniqueID": "uniqueid",
    "UserField": "userfield",
    "LinkedID": "linkedid",
    "Linkedid": "linkedid",
}


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    call_id_field: str = "uniqueid"
    call_id_prefix: str = ""
    tracking_field: str = "dst"
    contexts: frozenset[str] = frozenset()
    id_fields: Mapping[str, str] = field(default_factory=dict)
    tracker_template: str | None = None
    phone_region: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AsteriskConfig:
        return cls(
            zone=ZoneInfo("UTC" if settings.asterisk_usegmtime else settings.asterisk_timezone),
            call_id_field=settings.asterisk_call_id,
            call_id_prefix=settings.asterisk_call_id_prefix,
            tracking_field=settings.asterisk_tracking_field,
            contexts=frozenset(settings.asterisk_contexts),
            id_fields=settings.identifier_fields.get("asterisk", {}),
            tracker_template=settings.call_tracker_urls.get("asterisk"),
            phone_region=settings.phone_region,
        )


def from_ami(event: Mapping[str, str]) -> dict[str, str]:
    return {AMI_FIELDS[name]: value for name, value in event.items() if name in AMI_FIELDS}


def from_row(columns: Sequence[str], row: Sequence[str]) -> dict[str, str]:
    if len(row) != len(columns):
        raise InputError.one("row", "columns", f"has {len(row)} cells; the configured layout has {len(columns)}")
    return dict(zip(columns, row, strict=True))


def to_call(cdr: Mapping[str, str], config: AsteriskConfig) -> InboundCall | str:
    """The call a CDR reports, or why it is not one (a context that is not tracked)."""
    if config.contexts and cdr.get("dcontext", "") not in config.contexts:
        return "dcontext is not a tracked context"
    unique = (cdr.get(config.call_id_field) or cdr.get("uniqueid") or "").strip()
    if not unique:
        raise InputError.one(config.call_id_field, "missing", "is required to tell calls apart")
    call_id = config.call_id_prefix + unique
    started = local_time(cdr.get("start", ""), "start", config.zone)
    answered = cdr.get("disposition", "").strip().upper() == "ANSWERED"
    duration = seconds(cdr, "duration", default=0) or 0
    billsec = seconds(cdr, "billsec", default=0) or 0
    if billsec > duration:
        raise InputError.one("billsec", "order", "must not exceed duration")
    ids, note = extract_identifiers(cdr, config.id_fields)
    return InboundCall(
        provider="asterisk",
        call_id=call_id,
        started_at=started,
        answered=answered,
        tracking_number=normalize_number(cdr.get(config.tracking_field, ""), config.phone_region),
        caller=normalize_number(cdr.get("src", ""), config.phone_region),
        talk=billsec if answered else 0,
        hold=duration - billsec if answered else duration,
        call_tracker_url=config.tracker_template.replace("{call_id}", call_id) if config.tracker_template else None,
        ids=ids,
        note=note,
    )
