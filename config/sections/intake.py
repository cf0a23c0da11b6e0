"""Intake: the ingestion service, provider accounts, PBX readers, routing, number pools and sessions."""

from __future__ import annotations

import json
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, HttpUrl, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import NoDecode

from config.sections.common import NonNegativeFloat, PositiveFloat, PositiveInt, parse_list, parse_pairs


class IntakeSettings(BaseModel):
    """Everything before the producer: HTTP, providers, PBX, routing, pools."""

    # --- Ingestion service, PBX readers, routing (issue 5) -------------------------------------
    ingest_host: str = Field(default="127.0.0.1", description="Address the ingestion service listens on.")
    ingest_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8080, description="Its port.")
    ingest_public_url: HttpUrl | None = Field(
        default=None,
        description="Base URL the providers call (as they sign it), e.g. https://calls.example.com; "
        "needed behind a proxy or load balancer for Twilio signatures. Default: the URL the request arrived at.",
    )
    ingest_api_token: SecretStr | None = Field(
        default=None,
        description="When set, the generic call and conversion endpoints require 'Authorization: Bearer <it>'.",
    )
    ingest_allow_anonymous: bool = Field(
        default=False,
        description="Serve the generic call and conversion API without ingest_api_token on a non-loopback "
        "address (a warning is logged); without it the service refuses to start there.",
    )
    ingest_trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks of your own proxies, comma-separated; the client is the rightmost "
        "X-Forwarded-For hop not in this list (empty: X-Forwarded-For is ignored).",
    )
    ingest_metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, /metrics requires 'Authorization: Bearer <it>'; without it /metrics answers "
        "loopback clients only.",
    )
    ingest_counters: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Counters this deployment serves besides those in the routing table (conversions for "
        "any other counter are refused), comma-separated.",
    )
    held_max_calls: PositiveInt = Field(
        default=100_000, description="Most calls in the held stream; beyond, new held calls are refused with 503."
    )
    held_max_calls_per_account: PositiveInt = Field(
        default=10_000,
        description="Most held calls brought by one client account's telephony credentials; beyond, that "
        "client's new held calls are refused with 503 and the other clients' are not (keep it times the number "
        "of clients below held_max_calls for full isolation).",
    )
    held_retention_days: PositiveInt = Field(
        default=22,
        description="Held calls older than this many days (by when they were held) are deleted by the reconcile "
        "tick and counted in calltrack_held_expired_total; a little over the 21-day join window, after which "
        "a call can no longer be uploaded.",
    )
    ingest_max_line_bytes: Annotated[int, Field(ge=256)] = Field(
        default=64 * 1024, description="Longest line of a bulk NDJSON request; more is answered 413."
    )
    ingest_header_timeout: PositiveFloat = Field(
        default=10.0, description="Seconds a client has to send a request's headers; then the connection is closed."
    )
    ingest_body_timeout: PositiveFloat = Field(
        default=30.0, description="Seconds a request's body may pause between two chunks; then 408 and closed."
    )
    ingest_keepalive_timeout: PositiveFloat = Field(
        default=5.0, description="Seconds an idle keep-alive connection is kept open."
    )
    ingest_limit_concurrency: Annotated[int, Field(ge=10)] = Field(
        default=1000, description="Most connections and requests one ingestion process serves at once; beyond, 503."
    )
    ingest_max_connections_per_client: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="Most open connections from one client address per ingestion process; beyond, 503 and "
        "closed (the TCP peer: behind a proxy, see ingest_proxy_max_connections).",
    )
    ingest_max_unfinished_heads_per_client: Annotated[int, Field(ge=1)] = Field(
        default=20,
        description="Most requests from one client address per process whose headers have not all arrived; "
        "beyond, 503 and closed.",
    )
    ingest_proxy_max_connections: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="The connection and unfinished-head cap of a peer in ingest_trusted_proxies (it carries "
        "many clients); 0: no per-peer cap, only ingest_limit_concurrency.",
    )
    ingest_max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 * 1024, description="Largest body of a single-call request; more is answered 413."
    )
    ingest_max_bulk_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32 * 1024 * 1024, description="Largest body of a bulk NDJSON request; more is answered 413."
    )
    ingest_max_bulk_lines: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=100_000, description="Most calls in one bulk NDJSON request; more is answered 413."
    )
    routing_cache_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="How long a process reuses a routing lookup (0: ask Redis every time)."
    )
    first_caller_days: PositiveInt = Field(
        default=365, description="A caller is FirstTimeCaller=1 unless they called the counter within this many days."
    )
    first_caller_period_days: Annotated[int, Field(ge=1, le=366)] = Field(
        default=30,
        description="The caller history lives in bucketed hashes, one per shard, period of this many days and "
        "bucket, expiring whole first_caller_days after the period ends: a new caller is looked up in every "
        "period (13 at 30 days), so shorter periods cost Redis CPU, longer ones memory.",
    )
    caller_buckets: Annotated[int, Field(ge=1, le=1_048_576)] = Field(
        default=1024,
        description="Caller-history hashes per shard and period at least (each period takes max(this, the "
        "previous period's callers / 100)), so a hash stays in Redis's compact listpack encoding.",
    )
    caller_hash_secret: SecretStr | None = Field(
        default=None,
        description="Key of the hash that stands for a caller number in Redis; set it in production "
        "(without it the hash is unkeyed, and phone numbers are few enough to be guessed from it).",
    )
    twilio_auth_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description='Twilio auth token per account, "ACxxx=token,..." or a JSON object.'
    )
    zadarma_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description='Zadarma API secret per account name (the name in the webhook URL), "name=secret,..." or JSON.',
    )
    zadarma_allowed_sources: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks Zadarma's notifications may come from, comma-separated (empty: any).",
    )
    twilio_webhook_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Shared keys of Twilio Webhook Rules (X-Twilio-Webhooks-Signature-Settings), "
        '"key name=secret,..." or JSON; a name of * matches any key.',
    )
    zadarma_timezone: str = Field(
        default="Europe/Moscow", description="Zone of Zadarma's call_start (the account's zone; IANA name)."
    )
    mango_accounts: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description='Mango Office API key and salt per account name, "name=key:salt,..." or JSON {"name": "key:salt"}.',
    )
    identifier_fields: Annotated[dict[str, dict[str, str]], NoDecode] = Field(
        default_factory=dict,
        description='Where each provider carries visitor ids, JSON {"asterisk": {"ClientId": "userfield"}, '
        '"twilio": {"ClientId": "SipHeader_X-Client-Id"}, "mango": {"UserId": "customer.id"}}.',
    )
    call_tracker_urls: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"twilio": "https://console.twilio.com/us1/monitor/logs/calls/{call_id}"},
        description='CallTrackerURL template per provider with {call_id}, JSON {"zadarma": "https://.../{call_id}"}.',
    )
    asterisk_timezone: str = Field(
        default="UTC", description="Zone of Asterisk CDR times when cdr.conf has usegmtime=no (IANA name)."
    )
    asterisk_usegmtime: bool = Field(default=False, description="cdr.conf usegmtime=yes: CDR times are UTC.")
    asterisk_call_id: Literal["uniqueid", "linkedid"] = Field(
        default="uniqueid", description="CDR field that identifies a call (linkedid: one call per bridged group)."
    )
    asterisk_call_id_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.:-]{0,32}$", description="Prefix of Asterisk call ids (one per PBX)."
    )
    asterisk_tracking_field: str = Field(
        default="dst",
        pattern=r"^[a-z]{2,20}$",
        description="CDR column holding the tracking number dialled (dst when the dialplan routes by DID).",
    )
    asterisk_contexts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma list of dcontext values whose CDRs are calls (default: all)."
    )
    cdr_csv_columns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            *("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata"),
            *("start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield"),
        ],
        description="Master.csv columns in order (cdr.conf loguniqueid/loguserfield/newcdrcolumns change it).",
    )
    ami_host: str = Field(default="127.0.0.1", description="Asterisk Manager Interface host.")
    ami_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=5038, description="AMI port.")
    ami_username: str = Field(default="calltrack", description="AMI user (manager.conf, read=cdr).")
    ami_secret: SecretStr | None = Field(default=None, description="AMI user's secret.")
    ami_max_backoff: PositiveFloat = Field(default=30.0, description="Longest pause between AMI reconnects.")

    # --- Number pools and attribution (dynamic call tracking) ---------------------------------
    pool_lease_seconds: PositiveFloat = Field(
        default=1800, description="How long a session keeps its number after its last page view."
    )
    pool_grace_seconds: NonNegativeFloat = Field(
        default=0, description="A call this long after a lease ended still goes to its session, if unassigned."
    )
    pool_history_days: PositiveInt = Field(
        default=22, description="How long lease history is kept for late attribution (>= the join window)."
    )
    pool_fallback_numbers: Annotated[dict[int, str], NoDecode] = Field(
        default_factory=dict, description='Number shown when a pool is exhausted: "counter=+7495...,..." or JSON.'
    )
    static_label_as_tag: bool = Field(default=True, description="A static number's channel label becomes the Tag.")
    session_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Origins allowed to call the session API (CORS), comma-separated."
    )
    session_rate_per_ip: PositiveInt = Field(
        default=20, description="Session API requests per second per client address, across every counter."
    )
    pool_first_lease_seconds: PositiveFloat = Field(
        default=120,
        description="A new session's first lease; only a returning visitor (a second request) gets pool_lease_seconds.",
    )
    pool_leases_per_address: PositiveInt = Field(
        default=2, description="Live leases of one client address in one counter's pool; beyond: the fallback number."
    )
    pool_leases_per_network: PositiveInt = Field(
        default=4, description="Live leases of one /24 (IPv4) or /64 (IPv6) in one counter's pool."
    )
    session_rate_per_counter: PositiveInt = Field(
        default=2000, description="Session API requests per second per counter."
    )

    @field_validator("twilio_auth_tokens", "zadarma_secrets", "mango_accounts", "twilio_webhook_keys", mode="before")
    @classmethod
    def _parse_credentials(cls, value: object) -> object:
        return parse_pairs(value, "name=secret pairs separated by commas, or a JSON object")

    @field_validator("mango_accounts")
    @classmethod
    def _check_mango(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            key, sep, salt = secret.get_secret_value().partition(":")
            if not sep or not key or not salt:
                raise ValueError(f"account {name[:32]!r} must be given as key:salt")  # never the value
        return value

    @field_validator("identifier_fields", "call_tracker_urls", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("must be a JSON object") from None
        return value

    @field_validator("identifier_fields")
    @classmethod
    def _check_identifier_fields(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for provider, fields in value.items():
            if provider == "zadarma" and fields:
                raise ValueError("zadarma: Zadarma signs no field that could carry a visitor id; use number pools")
            unknown = set(fields) - {"ClientId", "UserId", "Yclid"}
            if unknown:
                raise ValueError(f"{provider}: columns must be ClientId, UserId or Yclid, not {sorted(unknown)}")
        return value

    @field_validator(
        "asterisk_contexts",
        "cdr_csv_columns",
        "ingest_trusted_proxies",
        "zadarma_allowed_sources",
        "ingest_counters",
        mode="before",
    )
    @classmethod
    def _parse_list(cls, value: object) -> object:
        return parse_list(value)

    @field_validator("pool_fallback_numbers", mode="before")
    @classmethod
    def _parse_fallbacks(cls, value: object) -> object:
        return parse_pairs(value, "counter=number pairs separated by commas, or a JSON object")

    @field_validator("pool_fallback_numbers")
    @classmethod
    def _check_fallbacks(cls, value: dict[int, str]) -> dict[int, str]:
        for counter, number in value.items():
            digits = number.removeprefix("+")
            if counter <= 0 or not number.startswith("+") or not digits.isdigit() or not 7 <= len(digits) <= 15:
                raise ValueError("must map positive counter ids to numbers written +<7-15 digits>")
        return value

    @field_validator("session_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("zadarma_timezone", "asterisk_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError("must be an IANA time zone name, as Europe/Moscow or UTC") from None
        return value


def ingest_secret_values(settings: IntakeSettings) -> list[str]:
    """The ingestion secrets (issue 5): provider tokens, API secrets, keys and salts, the caller hash key."""
    values: list[str] = []
    for mapping in (
        settings.twilio_auth_tokens,
        settings.zadarma_secrets,
        settings.mango_accounts,
        settings.twilio_webhook_keys,
    ):
        for secret in mapping.values():
            values.append(secret.get_secret_value())
            values.extend(secret.get_secret_value().split(":"))  # Mango: key and salt on their own
    for single in (settings.caller_hash_secret, settings.ami_secret, settings.ingest_metrics_token):
        if single is not None:
            values.append(single.get_secret_value())
    return values
