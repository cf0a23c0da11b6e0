"""``EmulatorAdmin``: a small httpx client for the emulator's ``/_emulator`` admin API."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import orjson


class EmulatorAdmin:
    """Inspect and steer a running emulator. Every method is one HTTP call; errors raise httpx errors."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + "/_emulator", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"emulator admin {method} {path} answered {response.status_code}: {response.text}",
                request=response.request,
                response=response,
            )
        return orjson.loads(response.content)

    @staticmethod
    def _filters(counter: int | None, kind: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if counter is not None:
            params["counter"] = counter
        if kind is not None:
            params["kind"] = kind
        return params

    # inspection
    def health(self) -> bool:
        return bool(self._call("GET", "/health")["ok"])

    def uploads(
        self, counter: int | None = None, kind: str | None = None, with_rows: bool = True
    ) -> list[dict[str, Any]]:
        """Accepted uploads, oldest first; ``kind`` is ``"calls"``, ``"conversions"`` or ``"chats"``."""
        params = self._filters(counter, kind)
        params["rows"] = "1" if with_rows else "0"
        result: list[dict[str, Any]] = self._call("GET", "/uploads", params=params)["uploads"]
        return result

    def rows(self, counter: int | None = None, kind: str | None = None) -> list[dict[str, str]]:
        """Every accepted row, with ``upload_id``, ``comment``, ``counter`` and ``kind`` added."""
        params = self._filters(counter, kind)
        params["format"] = "csv"
        result: list[dict[str, str]] = []
        for upload in self._call("GET", "/rows", params=params)["uploads"]:
            columns = upload.pop("columns")
            for values in csv.reader(io.StringIO(upload.pop("csv"))):
                if values:
                    row = dict(zip(columns, values, strict=False))
                    row.update(upload)
                    result.append(row)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset(self) -> None:
        """Forget uploads and every run-time change (upload ids keep increasing)."""
        self._call("POST", "/reset")

    # faults
    def set_faults(
        self,
        *,
        backend_error_share: float = 0.0,
        timeout_share: float = 0.0,
        drop_before_store_share: float = 0.0,
        drop_after_store_share: float = 0.0,
        latency: float | tuple[float, float] = 0.0,
        kinds: Iterable[str] | str | None = None,
        counters: Iterable[int] | int | None = None,
        seed: int | None = None,
        append: bool = False,
    ) -> dict[str, Any]:
        """Install one fault rule (replacing the current rules and scripts unless ``append``)."""
        rule: dict[str, Any] = {
            "backend_error_share": backend_error_share,
            "timeout_share": timeout_share,
            "drop_before_store_share": drop_before_store_share,
            "drop_after_store_share": drop_after_store_share,
            "latency": list(latency) if isinstance(latency, tuple) else latency,
            "kinds": [kinds] if isinstance(kinds, str) else (list(kinds) if kinds is not None else None),
            "counters": [counters] if isinstance(counters, int) else (list(counters) if counters else None),
        }
        return self.configure_faults(rules=[rule], seed=seed, append=append)

    def script(
        self,
        answers: Sequence[int | str | dict[str, Any]],
        *,
        kind: str | None = None,
        counter: int | None = None,
        append: bool = True,
    ) -> dict[str, Any]:
        """Answer the next requests of endpoint ``kind`` (upload/status/list) with ``answers`` in order.

        An answer is an HTTP status (``503``), ``"drop_before_store"``, ``"drop_after_store"``, ``"pass"``
        or a dict ``{"status": 429, "error_type": "quota_requests_by_ip", "message": ..., "latency": s}``;
        ``{"shape": "uploadings"}`` handles the request and answers in that shape (emulator.faults.SHAPES).
        """
        entry = {"kind": kind, "counter": counter, "answers": list(answers)}
        return self.configure_faults(script=[entry], append=append)

    def configure_faults(
        self,
        rules: Sequence[dict[str, Any]] = (),
        script: Sequence[dict[str, Any]] = (),
        seed: int | None = None,
        append: bool = False,
    ) -> dict[str, Any]:
        """The raw form of ``POST /_emulator/faults``."""
        body: dict[str, Any] = {"rules": list(rules), "script": list(script), "append": append}
        if seed is not None:
            body["seed"] = seed
        result: dict[str, Any] = self._call("POST", "/faults", json=body)
        return result

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # clock
    def clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/clock")
        return result

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock", json={"advance": seconds})
        return result

    def set_clock(self, iso: str | datetime, frozen: bool | None = None) -> dict[str, Any]:
        """Jump to an ISO time (``2025-01-01T23:59:50Z``); ``frozen`` stops/restarts its ticking."""
        value = iso.isoformat() if isinstance(iso, datetime) else iso
        body: dict[str, Any] = {"set": value}
        if frozen is not None:
            body["frozen"] = frozen
        result: dict[str, Any] = self._call("POST", "/clock", json=body)
        return result

    def freeze_clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock", json={"frozen": True})
        return result

    def unfreeze_clock(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock", json={"frozen": False})
        return result

    # quotas and settings
    def set_quotas(self, *, reset_counts: bool = False, **quotas: int | None) -> dict[str, Any]:
        """Change quotas: requests_per_ip_per_second, parallel_requests_per_login,
        requests_per_login_per_day (None or 0 disables), http_status (429 or 420)."""
        body: dict[str, Any] = dict(quotas)
        body["reset_counts"] = reset_counts
        result: dict[str, Any] = self._call("POST", "/quotas", json=body)
        return result

    def set_known_visitors(self, visitors: Iterable[str | int] | None) -> dict[str, Any]:
        """Identifiers that match a visitor; None accepts every identifier."""
        value = None if visitors is None else [str(v) for v in visitors]
        return self.settings(known_visitors=value)

    def rules(self, **changes: Any) -> dict[str, Any]:
        """join_rules, count_unjoined, strict (bools), token_lifetime (seconds); no arguments reads them."""
        if not changes:
            current: dict[str, Any] = self._call("GET", "/rules")
            return current
        result: dict[str, Any] = self._call("POST", "/rules", json=changes)
        return result

    # tokens and logins
    def tokens(self, login: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/tokens", params={"login": login} if login else None)[
            "tokens"
        ]
        return result

    def issue_token(
        self,
        login: str,
        lifetime: float | None = None,
        refresh: bool = False,
        client_id: str | None = None,
        never_expires: bool = False,
    ) -> dict[str, Any]:
        """A token of ``login`` living ``lifetime`` seconds (None: the token_lifetime in force), or forever."""
        body: dict[str, Any] = {"login": login, "refresh": refresh}
        if never_expires:
            body["lifetime"] = None
        elif lifetime is not None:
            body["lifetime"] = lifetime
        if client_id is not None:
            body["client_id"] = client_id
        result: dict[str, Any] = self._call("POST", "/tokens", json=body)
        return result

    def expire_token(self, token: str, refresh: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/tokens/expire", json={"token": token, "refresh": refresh})
        return result

    def revoke_token(self, token: str) -> None:
        self._call("POST", "/tokens/revoke", json={"token": token})

    def logins(self) -> dict[str, dict[str, Any]]:
        """Per login: in_flight, peak_parallel, requests, requests_today, quota_rejections."""
        result: dict[str, dict[str, Any]] = self._call("GET", "/logins")["logins"]
        return result

    def reset_login_stats(self) -> None:
        self._call("POST", "/logins/reset")

    # counters
    def counter(self, counter: int) -> dict[str, Any]:
        """offline_options, enabled_at, goals and calls_goal_name of a counter."""
        result: dict[str, Any] = self._call("GET", f"/counters/{counter}")
        return result

    def set_counter(
        self,
        counter: int,
        offline_options: dict[str, int | bool] | None = None,
        enabled_at: dict[str, str | None] | None = None,
        goals: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"offline_options": offline_options or {}, "goals": list(goals)}
        if enabled_at is not None:
            body["enabled_at"] = enabled_at
        result: dict[str, Any] = self._call("POST", f"/counters/{counter}", json=body)
        return result

    def settings(self, **changes: Any) -> dict[str, Any]:
        """step_seconds, known_visitors, trust_forwarded_for; no arguments reads them."""
        if not changes:
            current: dict[str, Any] = self._call("GET", "/settings")
            return current
        result: dict[str, Any] = self._call("POST", "/settings", json=changes)
        return result
