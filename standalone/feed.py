"""The demo's sample stream: calls sent to the ingestion service in each provider's own format.

Twilio status callbacks (signed as Twilio signs them), Zadarma ``NOTIFY_END`` (signed), Mango Office
``events/summary`` (signed) and generic NDJSON to the bulk endpoint. Each call dials one of the demo's
tracking numbers (routed to counters 101, 202, 303) and carries a ClientId (or Yclid) where the
provider's configured identifier field says, so every call can be uploaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx

from ingest.signatures import mango_sign, twilio_signature, zadarma_signature
from worker.intake.routing import Route

# Demo credentials of the fake provider accounts: not secrets, only the demo's own.
TWILIO_SID = "AC" + "d3m0" * 8
TWILIO_TOKEN = "demo-twilio-auth-token"  # noqa: S105
ZADARMA_SECRET = "demo-zadarma-secret"  # noqa: S105
MANGO_KEY, MANGO_SALT = "demo-mango-api-key", "demo-mango-salt"
NUMBERS = {"+74950000101": 101, "+74950000202": 202, "+74950000303": 303}
# Counter 202's pool for the demo site's visitors (standalone/site.py).
POOL_COUNTER = 202
# Every sample Zadarma call leases one for its visitor (released at once, it stays held for
# pool_first_lease_seconds): enough numbers for the first burst and the calls fed while those last.
POOL_NUMBERS = tuple(f"+7495000{n}" for n in range(2201, 2601))
PROVIDERS = ("twilio", "zadarma", "mango", "generic")


def demo_env() -> dict[str, str]:
    """Settings of the demo's provider accounts and where each carries the visitor's ClientId."""
    return {
        "CALLTRACK_TWILIO_AUTH_TOKENS": f"{TWILIO_SID}={TWILIO_TOKEN}",
        "CALLTRACK_ZADARMA_SECRETS": f"demo={ZADARMA_SECRET}",
        "CALLTRACK_MANGO_ACCOUNTS": f"demo={MANGO_KEY}:{MANGO_SALT}",
        "CALLTRACK_CALLER_HASH_SECRET": "demo-caller-hash-secret",
        "CALLTRACK_IDENTIFIER_FIELDS": json.dumps(
            {
                "twilio": {"ClientId": "SipHeader_X-Client-Id"},
                "mango": {"ClientId": "customer.client_id"},
            }
        ),
    }


def demo_routes() -> list[Route]:
    kinds: dict[int, Literal["static", "dynamic"]] = {101: "static", 202: "dynamic", 303: "static"}
    routes = [Route(number, counter, kinds[counter], label=f"demo-{counter}") for number, counter in NUMBERS.items()]
    return routes + [Route(number, 202, "dynamic") for number in POOL_NUMBERS]


@dataclass
class FeedResult:
    sent: int = 0
    accepted: int = 0
    held: int = 0  # a Zadarma call to no leased pool number (Zadarma signs no visitor id) waits held
    refused: int = 0


class Feeder:
    """Posts sample calls to an ingestion service at ``base_url``."""

    def __init__(self, base_url: str, zone: str = "Europe/Moscow") -> None:
        self.base_url = base_url.rstrip("/")
        self.zone = ZoneInfo(zone)
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        self.run = int(datetime.now(UTC).timestamp())

    def close(self) -> None:
        self.http.close()

    def send(self, start: int, count: int) -> FeedResult:
        result = FeedResult()
        bulk: list[dict[str, Any]] = []
        for n in range(start, start + count):
            provider = PROVIDERS[n % len(PROVIDERS)]
            if provider == "generic":
                bulk.append(self._generic(n))
                continue
            response = getattr(self, f"_{provider}")(n)
            result.sent += 1
            status = "accepted" if provider == "twilio" else response.json().get("status")
            ok = response.status_code == 200 and status == "accepted"
            held = response.status_code == 200 and status == "held"
            result.accepted += ok
            result.held += held
            result.refused += not ok and not held
        if bulk:
            body = "\n".join(json.dumps(call) for call in bulk).encode()
            response = self.http.post("/v1/calls/bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
            report = response.json()
            result.sent += len(bulk)
            result.accepted += int(report.get("accepted", 0))
            result.refused += len(bulk) - int(report.get("accepted", 0))
        return result

    # --- one call each ------------------------------------------------------------------------------
    def _call(self, n: int) -> dict[str, Any]:
        number = list(NUMBERS)[n % len(NUMBERS)]
        ended = int(datetime.now(UTC).timestamp()) - 30 - n % 300
        answered = n % 5 != 0
        talk = (n * 7) % 400 if answered else 0
        return {
            "id": f"{self.run}x{n}",
            "to": number,
            "from": f"+7916{n % 10_000_000:07d}",
            "ended": ended,
            "answered": answered,
            "talk": talk,
            "client_id": str(1_700_000_000_000_000_000 + self.run % 100_000 * 10_000 + n),
        }

    def _twilio(self, n: int) -> httpx.Response:
        c = self._call(n)
        form = {
            "AccountSid": TWILIO_SID,
            "CallSid": "CA" + f"{c['id']:0>32}"[-32:],
            "CallStatus": "completed" if c["answered"] else "no-answer",
            "CallDuration": str(c["talk"]),
            "Direction": "inbound",
            "To": c["to"],
            "From": c["from"],
            "Timestamp": format_datetime(datetime.fromtimestamp(c["ended"], UTC)),
            "SipHeader_X-Client-Id": c["client_id"],
        }
        url = f"{self.base_url}/twilio/voice"
        signature = twilio_signature(TWILIO_TOKEN, url, form.items())
        return self.http.post(
            "/twilio/voice",
            content=urlencode(form),
            headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        )

    def _zadarma(self, n: int) -> httpx.Response:
        """Zadarma signs no visitor id, so the call goes through counter 202's pool as a site visitor's
        would: a number is leased for the visitor's session, the call is made to it within the lease
        (so the pipeline attributes it, none is left held), and the lease is released."""
        c = self._call(n)
        session = {"counter": POOL_COUNTER, "ClientId": c["client_id"], "URL": f"https://shop.example/p/{n % 12}"}
        leased = self.http.post("/v1/number", json=session).json()
        to = leased.get("number") if not leased.get("fallback") else None
        try:
            return self.zadarma_call(
                f"in_{c['id']}",
                to=to or c["to"],  # no pool number free: the static number (the call is then held)
                caller=c["from"],
                answered=c["answered"],
                talk=c["talk"],
            )
        finally:
            if to:
                self.http.post("/v1/number/release", json=session)

    def zadarma_call(
        self,
        call_id: str,
        *,
        to: str,
        caller: str,
        started: int | None = None,
        answered: bool = True,
        talk: int = 30,
    ) -> httpx.Response:
        """One signed Zadarma NOTIFY_END. Zadarma signs no visitor id: a number pool's lease attributes it."""
        when = int(datetime.now(UTC).timestamp()) if started is None else started
        form = {
            "event": "NOTIFY_END",
            "call_start": datetime.fromtimestamp(when, self.zone).strftime("%Y-%m-%d %H:%M:%S"),
            "pbx_call_id": call_id,
            "caller_id": caller.lstrip("+"),
            "called_did": to.lstrip("+"),
            "disposition": "answered" if answered else "no answer",
            "duration": str(talk),
        }
        signature = zadarma_signature(ZADARMA_SECRET, form["caller_id"] + form["called_did"] + form["call_start"])
        return self.http.post(
            "/zadarma/demo",
            content=urlencode(form),
            headers={"Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        )

    def _mango(self, n: int) -> httpx.Response:
        c = self._call(n)
        created = c["ended"] - c["talk"] - 5
        summary = {
            "entry_id": f"demo{c['id']}",
            "call_direction": 1,
            "from": {"number": c["from"].lstrip("+")},
            "to": {"number": "101"},
            "line_number": c["to"].lstrip("+"),
            "create_time": created,
            "forward_time": 0,
            "talk_time": created + 5 if c["answered"] else 0,
            "end_time": c["ended"],
            "entry_result": 1 if c["answered"] else 0,
            "disconnect_reason": 1110,
            "customer": {"client_id": c["client_id"]},
        }
        text = json.dumps(summary)
        form = {"vpbx_api_key": MANGO_KEY, "sign": mango_sign(MANGO_KEY, text, MANGO_SALT), "json": text}
        return self.http.post(
            "/mango/demo/events/summary",
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def _generic(self, n: int) -> dict[str, Any]:
        c = self._call(n)
        call: dict[str, Any] = {
            "call_id": f"crm-{c['id']}",
            "to": c["to"],
            "from": c["from"],
            "start": c["ended"] - c["talk"] - 3,
            "end": c["ended"],
            "talk_duration": c["talk"],
            "answered": c["answered"],
            "URL": f"https://shop.example/landing/{n % 12}",
        }
        if n % 8 == 3:
            call["Yclid"] = str(5_000_000_000_000_000 + n)
        else:
            call["ClientId"] = c["client_id"]
        return call
