"""Metrica API errors: one class per documented ``error_type``, rendered as Metrica's error body."""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """An error answered as ``{"errors": [...], "code": N, "message": "..."}``."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "backend_error"

    def __init__(self, message: str, location: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.http_status = status if status is not None else self.status

    def body(self) -> dict[str, Any]:
        return error_body(self.http_status, self.error_type, self.message, self.location)


def error_body(status: int, error_type: str, message: str, location: str = "") -> dict[str, Any]:
    """Metrica's error JSON."""
    return {
        "errors": [{"error_type": error_type, "message": message, "location": location}],
        "code": status,
        "message": message,
    }


class InvalidUploading(ApiError):
    status = 400
    error_type = "invalid_uploading"


class InvalidParameter(ApiError):
    status = 400
    error_type = "invalid_parameter"


class MissingParameter(ApiError):
    status = 400
    error_type = "missing_parameter"


class LimitExceeded(ApiError):
    status = 400
    error_type = "limit_exceeded"


class Unauthorized(ApiError):
    status = 401
    error_type = "unauthorized"


class InvalidToken(ApiError):
    status = 403
    error_type = "invalid_token"


class AccessDenied(ApiError):
    status = 403
    error_type = "access_denied"


class NotFound(ApiError):
    status = 404
    error_type = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_parameter"


class Conflict(ApiError):
    status = 409
    error_type = "conflict"


class QuotaRequestsByIp(ApiError):
    status = 429
    error_type = "quota_requests_by_ip"


class QuotaParallelRequests(ApiError):
    status = 429
    error_type = "quota_parallel_requests"


class QuotaRequestsByUid(ApiError):
    status = 429
    error_type = "quota_requests_by_uid"


class QuotaRequestsByCounterId(ApiError):
    status = 429
    error_type = "quota_requests_by_counter_id"


class BackendError(ApiError):
    status = 503
    error_type = "backend_error"


class Timeout(ApiError):
    status = 504
    error_type = "timeout"
