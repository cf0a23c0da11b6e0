"""The HTTP boundary to the Yandex Metrica management API: the only module that speaks HTTP to it.

One ``MetricaClient`` per process wraps an ``httpx.Client`` with explicit timeouts and an injectable
transport (tests use the emulator over real HTTP; unit tests may pass ``httpx.MockTransport``).
Tokens are passed per call, sent only in the ``Authorization`` header and never kept in an error.
Failures become the exceptions drawn in :mod:`worker.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import SecretStr

from worker.errors import (
    AuthError,
    InvalidUploadError,
    MetricaError,
    NotFoundError,
    QuotaError,
    ServerError,
    TransportError,
    UnexpectedAnswerError,
    UnreadableAnswerError,
)
from worker.model.kinds import KindSpec, UploadKind

_T = TypeVar("_T")
FINAL_STATUSES = frozenset({"PROCESSED", "LINKAGE_FAILURE"})
LIST_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Uploading:
    """One upload as Metrica reports it."""

    id: int
    status: str
    comment: str
    source_quantity: int | None = None
    line_quantity: int | None = None
    create_time: str = ""
    type: str = ""  # the unified endpoint's kind of upload: BASIC (conversions), CALLS, CHATS

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Any) -> Uploading:
        if not isinstance(data, dict) or not isinstance(data.get("id"), int) or not isinstance(data.get("status"), str):
            raise ValueError("an uploading needs an integer id and a status")
        return cls(
            id=data["id"],
            status=data["status"],
            comment=str(data.get("comment") or ""),
            source_quantity=_opt_int(data.get("source_quantity")),
            line_quantity=_opt_int(data.get("line_quantity")),
            create_time=str(data.get("create_time") or ""),
            type=str(data.get("type") or ""),
        )


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_uploading(body: Any) -> Uploading:
    """The upload object of an answer, in either shape the reference documents: the object under
    ``uploading`` (upload_1, uploadCalls, findById_1) or the first element of ``uploadings``
    (upload_chats, findById_chats). Raises ``ValueError`` when it is in neither."""
    if isinstance(body, dict):
        if isinstance(body.get("uploading"), dict):
            return Uploading.from_json(body["uploading"])
        items = body.get("uploadings")
        if isinstance(items, list) and items:
            return Uploading.from_json(items[0])
    raise ValueError("neither an 'uploading' object nor a non-empty 'uploadings' list")


class MetricaClient:
    """Calls the three endpoints of each upload kind (upload, one status, list) where Metrica's
    reference documents them, or the unified ``upload?type=`` transport for calls and conversions when
    ``unified`` asks for it; and the counter management requests of :mod:`worker.delivery.counter_setup`.

    A 2xx answer in no documented shape raises ``UnreadableAnswerError`` (retryable, outcome unknown): a
    post may have stored the file, so the uploader looks it up by its comment before posting again."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: httpx.Timeout,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "calltrack-worker",
        observer: Callable[[str, str, str], None] | None = None,
        unified: bool = False,
    ) -> None:
        self.unified = unified
        # observer(endpoint, result, error_type) hears of every request (worker/ops/metrics.py counts them)
        self._observer = observer
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def upload(
        self,
        spec: KindSpec,
        counter_id: int,
        token: SecretStr,
        content: bytes,
        *,
        comment: str,
        new_goal_name: str | None = None,
    ) -> Uploading:
        """Post one CSV file; returns the upload Metrica created."""
        endpoints = spec.endpoints(self.unified)
        params = {"comment": comment}
        if endpoints.upload_type:
            params["type"] = endpoints.upload_type
        if new_goal_name and spec.kind is UploadKind.CALLS and endpoints.upload_type is None:
            params["new_goal_name"] = new_goal_name  # a parameter of upload_calls only
        return self._send(
            "POST",
            endpoints.upload.format(counter=counter_id),
            token,
            f"upload_{spec.kind.value}",
            _uploading,
            params=params,
            files={"file": ("upload.csv", content, "text/csv")},
        )

    def uploading(self, spec: KindSpec, counter_id: int, token: SecretStr, upload_id: int) -> Uploading:
        path = spec.endpoints(self.unified).status.format(counter=counter_id, upload_id=upload_id)
        return self._send("GET", path, token, f"status_{spec.kind.value}", _uploading)

    def uploadings(
        self, spec: KindSpec, counter_id: int, token: SecretStr, *, limit: int = LIST_PAGE, offset: int = 0
    ) -> list[Uploading]:
        """One page of the kind's uploads, newest first. ``limit`` counts every item of the page: the
        shared ``uploadings`` list mixes kinds, and only this kind's are returned (an item without
        ``type`` is kept: the reference does not promise one, and a comment names its batch anyway)."""
        endpoints = spec.endpoints(self.unified)
        found = self._send(
            "GET",
            endpoints.list.format(counter=counter_id),
            token,
            f"list_{spec.kind.value}",
            _uploadings,
            params={"limit": limit, "offset": offset},
        )
        if endpoints.list_type is None:
            return found
        return [u for u in found if not u.type or u.type == endpoints.list_type]

    def management(
        self, method: str, path: str, token: SecretStr, endpoint: str, *, json: dict[str, Any] | None = None
    ) -> Any:
        """A request to the management API outside the upload endpoints (counter options, goals)."""
        return self._send(method, path, token, endpoint, _as_is, json=json)

    # --- internals ---------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        token: SecretStr,
        endpoint: str,
        read: Callable[[Any], _T],
        *,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> _T:
        """The request's answer as ``read`` makes it; every outcome is observed, an unreadable 2xx too."""
        try:
            body = read(self._request(method, path, token, params=params, files=files, json=json))
        except MetricaError as error:
            self._observe(endpoint, _result_of(error), error.error_type)
            raise
        self._observe(endpoint, "ok", "")
        return body

    def _observe(self, endpoint: str, result: str, error_type: str) -> None:
        if self._observer is not None:
            self._observer(endpoint, result, error_type)

    def _request(
        self,
        method: str,
        path: str,
        token: SecretStr,
        *,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        headers = {"Authorization": f"OAuth {token.get_secret_value()}"}
        url = path
        try:
            response = self._http.request(method, path, params=params, files=files, json=json, headers=headers)
        except httpx.TimeoutException as error:
            raise TransportError(f"no answer in time ({type(error).__name__})", method=method, url=url) from None
        except httpx.TransportError as error:
            raise TransportError(f"connection failed ({type(error).__name__})", method=method, url=url) from None
        url = str(response.request.url.copy_with(query=None))
        if response.is_success:
            try:
                return orjson.loads(response.content)
            except orjson.JSONDecodeError:
                status = response.status_code
                raise UnreadableAnswerError(
                    "the answer is not JSON", method=method, url=url, status=status, error_type="bad_answer"
                ) from None
        raise _error_from(response, method, url)


def _uploading(body: Any) -> Uploading:
    try:
        return read_uploading(body)
    except ValueError as error:
        raise UnreadableAnswerError(f"the answer holds no upload: {error}", error_type="bad_answer") from None


def _uploadings(body: Any) -> list[Uploading]:
    items = body.get("uploadings") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise UnreadableAnswerError("the list answer has no 'uploadings' array", error_type="bad_answer")
    try:
        return [Uploading.from_json(item) for item in items]
    except ValueError as error:
        raise UnreadableAnswerError(str(error), error_type="bad_answer") from None


def _as_is(body: Any) -> Any:
    return body


_QUOTA_CODES = {420, 429}
_RESULTS: tuple[tuple[type[MetricaError], str], ...] = (
    (QuotaError, "quota"),
    (ServerError, "server_error"),
    (TransportError, "no_answer"),
    (AuthError, "auth"),
    (NotFoundError, "not_found"),
    (InvalidUploadError, "invalid"),
    (UnreadableAnswerError, "unreadable"),
)


#: Every ``result`` a request is counted under (worker/ops/labels.py takes its label set from here).
RESULTS = frozenset({"ok", "unexpected"} | {name for _, name in _RESULTS})


def _result_of(error: MetricaError) -> str:
    return next((name for cls, name in _RESULTS if isinstance(error, cls)), "unexpected")


def _error_from(response: httpx.Response, method: str, url: str) -> MetricaError:
    """Turn a non-2xx answer into the matching exception, with Metrica's own error type and text."""
    status = response.status_code
    error_type, message = "", response.reason_phrase or "error"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        error_type = str(first.get("error_type") or "")
        message = str(first.get("message") or body.get("message") or message)
    message = message[:500]
    kwargs: dict[str, Any] = {"method": method, "url": url, "status": status, "error_type": error_type}
    if status in _QUOTA_CODES or error_type.startswith("quota_"):
        return QuotaError(message, **kwargs)
    if status >= 500:
        return ServerError(message, **kwargs)
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status == 400:
        return InvalidUploadError(message, **kwargs)
    return UnexpectedAnswerError(message, **kwargs)
