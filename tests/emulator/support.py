"""Shared pieces of the emulator tests: the base config and a thin Metrica API client (fixtures: fixtures.py)."""

from __future__ import annotations

from typing import Any

import httpx

from emulator.clock import parse_iso
from emulator.config import Account, EmulatorConfig, QuotaConfig

# Frozen, whole-second emulator time: statuses and quota windows move only when a test moves the clock.
START = "2030-01-01T12:00:00Z"
STEP = 10.0
TOKENS = {"alice": "token-alice", "bob": "token-bob", "carol": "token-carol"}
BASE_CONFIG = EmulatorConfig(
    accounts=(
        Account(TOKENS["alice"], "alice", frozenset({101, 102})),
        Account(TOKENS["bob"], "bob", frozenset({201})),
        Account(TOKENS["carol"], "carol", frozenset({101})),
    ),
    step_seconds=STEP,
    # The per-IP quota is switched on by the quota tests only; every test sends from 127.0.0.1.
    quotas=QuotaConfig(requests_per_ip_per_second=None),
    clock_start=parse_iso(START),
    clock_frozen=True,
    seed=1,
)
PREFIX = "/management/v1/counter/{counter}/offline_conversions"
PAST = 1_700_000_000  # a DateTime well before START


class Metrica:
    """The Metrica API of one emulator, as a worker would call it (no retries, no magic)."""

    def __init__(self, base_url: str, token: str = TOKENS["alice"]) -> None:
        self.base_url = base_url
        self.token = token
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def headers(self, token: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"OAuth {token or self.token}"}
        headers.update(extra or {})
        return headers

    def upload(
        self,
        counter: int,
        csv_text: str | bytes,
        kind: str = "calls",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> httpx.Response:
        path = "upload_calls" if kind == "calls" else "upload"
        content = csv_text.encode() if isinstance(csv_text, str) else csv_text
        return self.http.post(
            PREFIX.format(counter=counter) + "/" + path,
            params=params,
            files={"file": ("data.csv", content, "text/csv")},
            headers=self.headers(token, headers),
        )

    def status(self, counter: int, upload_id: int, kind: str = "calls", token: str | None = None) -> httpx.Response:
        path = "calls_uploading" if kind == "calls" else "uploading"
        return self.http.get(f"{PREFIX.format(counter=counter)}/{path}/{upload_id}", headers=self.headers(token))

    def list(
        self,
        counter: int,
        kind: str = "calls",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        path = "calls_uploadings" if kind == "calls" else "uploadings"
        return self.http.get(
            f"{PREFIX.format(counter=counter)}/{path}", params=params, headers=self.headers(token, headers)
        )

    def close(self) -> None:
        self.http.close()


def calls_csv(*rows: str, header: str = "ClientId,DateTime") -> str:
    return "\n".join([header, *rows]) + "\n"


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(code, error_type, message) of a Metrica error answer, checking the body's exact shape."""
    body = response.json()
    assert set(body) == {"errors", "code", "message"}, body
    assert len(body["errors"]) == 1 and set(body["errors"][0]) == {"error_type", "message", "location"}, body
    assert body["code"] == response.status_code
    assert body["message"] == body["errors"][0]["message"]
    return body["code"], body["errors"][0]["error_type"], body["message"]
