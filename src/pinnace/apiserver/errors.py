"""API errors as Kubernetes `Status` objects, serialized the way kube-apiserver does.

Handlers raise `ApiError` subclasses deep down; one middleware turns them into HTTP. The body is compact
JSON with the Go struct's field order (kind, apiVersion, metadata, status, message, reason, details,
code), empty fields left out as Go's `omitempty` does, and a trailing newline: some clients compare bytes.
"""

from __future__ import annotations

from typing import Any

import orjson


class ApiError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict] | None = None,
        retry_after: int | None = None,
        code: int | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes
        self.retry_after = retry_after
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason

    def status(self) -> dict[str, Any]:
        return status_body(
            self.code,
            self.reason,
            self.message,
            name=self.name,
            group=self.group,
            kind=self.kind,
            causes=self.causes,
            retry_after=self.retry_after,
        )

    def body(self) -> bytes:
        return encode_status(self.status())


def status_body(
    code: int,
    reason: str,
    message: str,
    *,
    name: str | None = None,
    group: str | None = None,
    kind: str | None = None,
    causes: list[dict] | None = None,
    retry_after: int | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    if retry_after:
        details["retryAfterSeconds"] = retry_after
    if details:
        status["details"] = details
    status["code"] = code
    return status


def encode_status(status: dict[str, Any]) -> bytes:
    return orjson.dumps(status) + b"\n"


def success_status(name: str, group: str, kind: str, uid: str | None = None) -> dict[str, Any]:
    """What a DELETE answers when the object is gone at once (kube-apiserver's Status Success)."""
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def qualified(plural: str, group: str) -> str:
    """`pods` or `deployments.apps`: how Kubernetes names a resource in messages."""
    return f"{plural}.{group}" if group else plural


class NotFound(ApiError):
    code = 404
    reason = "NotFound"

    @classmethod
    def object(cls, plural: str, group: str, name: str) -> NotFound:
        return cls(f'{qualified(plural, group)} "{name}" not found', name=name, group=group, kind=plural)


class AlreadyExists(ApiError):
    code = 409
    reason = "AlreadyExists"

    @classmethod
    def object(cls, plural: str, group: str, name: str) -> AlreadyExists:
        return cls(f'{qualified(plural, group)} "{name}" already exists', name=name, group=group, kind=plural)


class Conflict(ApiError):
    code = 409
    reason = "Conflict"

    @classmethod
    def modified(cls, plural: str, group: str, name: str) -> Conflict:
        return cls(
            f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            name=name,
            group=group,
            kind=plural,
        )


class Invalid(ApiError):
    code = 422
    reason = "Invalid"

    @classmethod
    def fields(cls, kind: str, group: str, name: str, causes: list[dict]) -> Invalid:
        """causes: [{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.x"}]."""
        parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
        summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        qualified_kind = f"{kind}.{group}" if group else kind
        return cls(
            f'{qualified_kind} "{name}" is invalid: {summary}', name=name, group=group, kind=kind, causes=causes
        )


class BadRequest(ApiError):
    code = 400
    reason = "BadRequest"


class Unauthorized(ApiError):
    code = 401
    reason = "Unauthorized"


class Forbidden(ApiError):
    code = 403
    reason = "Forbidden"


class MethodNotAllowed(ApiError):
    code = 405
    reason = "MethodNotAllowed"


class NotAcceptable(ApiError):
    code = 406
    reason = "NotAcceptable"


class Expired(ApiError):
    code = 410
    reason = "Expired"


class RequestEntityTooLarge(ApiError):
    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code = 415
    reason = "UnsupportedMediaType"


class TooManyRequests(ApiError):
    code = 429
    reason = "TooManyRequests"


class InternalError(ApiError):
    code = 500
    reason = "InternalError"


class ServiceUnavailable(ApiError):
    code = 503
    reason = "ServiceUnavailable"


def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    """One `details.causes` entry in Go's field order (reason, message, field)."""
    return {"reason": reason, "message": message, "field": field}
