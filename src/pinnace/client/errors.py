"""Typed errors from the API server's `Status` bodies.

Kubernetes answers every failed request with a `Status` object whose `reason` says what went wrong
(`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, ...) and whose `code` is the HTTP status.
Callers branch on the Python class (`except NotFound:`), which is chosen from the reason first and the
code second, as client-go's `apierrors.IsNotFound` and friends do. A body that is not a `Status` (a proxy's
HTML page, plain text) still yields the error class for its HTTP code, with the text as the message.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the API server answered with a failure `Status`.

    `.status` is the Status dict (synthesised when the server sent none), `.code` the HTTP code,
    `.reason` the Status reason (a Kubernetes `StatusReason` such as "NotFound"), `.message` its message.
    """

    reason_name = "Unknown"
    default_code = 500

    def __init__(self, status: dict[str, Any] | str | None = None, code: int | None = None) -> None:
        if not isinstance(status, dict):
            message = status if isinstance(status, str) else ""
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": self.reason_name,
                "code": code if code is not None else self.default_code,
            }
        self.status: dict[str, Any] = status
        self.code: int = int(status.get("code") or code or self.default_code)
        self.reason: str = status.get("reason") or self.reason_name
        self.message: str = status.get("message") or ""
        super().__init__(f"({self.reason}) {self.message}" if self.message else self.reason)

    @property
    def details(self) -> dict[str, Any]:
        return self.status.get("details") or {}

    @property
    def retry_after_seconds(self) -> float | None:
        """The server's advice on when to retry (`details.retryAfterSeconds`), if it gave any."""
        value = self.details.get("retryAfterSeconds")
        return float(value) if value is not None else None


class BadRequest(ApiError):
    reason_name, default_code = "BadRequest", 400


class Unauthorized(ApiError):
    reason_name, default_code = "Unauthorized", 401


class Forbidden(ApiError):
    reason_name, default_code = "Forbidden", 403


class NotFound(ApiError):
    reason_name, default_code = "NotFound", 404


class MethodNotAllowed(ApiError):
    reason_name, default_code = "MethodNotSupported", 405


class NotAcceptable(ApiError):
    reason_name, default_code = "NotAcceptable", 406


class Conflict(ApiError):
    """An optimistic-concurrency failure: the object changed since the resourceVersion sent."""

    reason_name, default_code = "Conflict", 409


class AlreadyExists(Conflict):
    """Create of a name that exists. A subclass of Conflict because both arrive as HTTP 409."""

    reason_name, default_code = "AlreadyExists", 409


class Expired(ApiError):
    """HTTP 410 Gone: a watch or continue token older than the server's compacted history."""

    reason_name, default_code = "Expired", 410


class Gone(Expired):
    reason_name, default_code = "Gone", 410


class RequestEntityTooLarge(ApiError):
    reason_name, default_code = "RequestEntityTooLarge", 413


class UnsupportedMediaType(ApiError):
    reason_name, default_code = "UnsupportedMediaType", 415


class Invalid(ApiError):
    """HTTP 422: the object failed validation; `.causes` lists the fields and why."""

    reason_name, default_code = "Invalid", 422

    @property
    def causes(self) -> list[dict[str, Any]]:
        return list(self.details.get("causes") or [])


class TooManyRequests(ApiError):
    reason_name, default_code = "TooManyRequests", 429


class InternalError(ApiError):
    reason_name, default_code = "InternalError", 500


class ServiceUnavailable(ApiError):
    reason_name, default_code = "ServiceUnavailable", 503


class ServerTimeout(ApiError):
    reason_name, default_code = "ServerTimeout", 504


class Timeout(ApiError):
    reason_name, default_code = "Timeout", 504


_BY_REASON: dict[str, type[ApiError]] = {
    cls.reason_name: cls
    for cls in (
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, NotAcceptable, Conflict,
        AlreadyExists, Expired, Gone, RequestEntityTooLarge, UnsupportedMediaType, Invalid,
        TooManyRequests, InternalError, ServiceUnavailable, ServerTimeout, Timeout,
    )
}

# When the reason is missing or unknown, the HTTP code picks the class (apierrors.FromObject does the same).
_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    406: NotAcceptable, 409: Conflict, 410: Expired, 413: RequestEntityTooLarge, 415: UnsupportedMediaType,
    422: Invalid, 429: TooManyRequests, 500: InternalError, 503: ServiceUnavailable, 504: ServerTimeout,
}


def error_from_status(status: dict[str, Any] | str | None, code: int | None = None) -> ApiError:
    """Build the typed error for a Status body (or a non-Status text body) and HTTP code."""
    if isinstance(status, dict) and status.get("kind") == "Status":
        code = int(status.get("code") or code or 500)
        cls = _BY_REASON.get(status.get("reason") or "") or _BY_CODE.get(code, ApiError)
        # A 410 during a watch is "Expired" whatever reason string the server picked.
        if code == 410 and not issubclass(cls, Expired):
            cls = Expired
        return cls(status, code)
    code = code or 500
    cls = _BY_CODE.get(code, ApiError)
    if isinstance(status, dict):
        status = str(status)
    return cls(status or "", code)
