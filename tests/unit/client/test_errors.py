import pytest

from pinnace.client import (
    AlreadyExists,
    ApiError,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    error_from_status,
)


def status(code, reason, message="m", **details):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message, "details": details}


@pytest.mark.parametrize("body, code, cls", [
    (status(404, "NotFound"), 404, NotFound),
    (status(409, "AlreadyExists"), 409, AlreadyExists),
    (status(409, "Conflict"), 409, Conflict),
    (status(422, "Invalid"), 422, Invalid),
    (status(410, "Expired"), 410, Expired),
    (status(410, "Gone"), 410, Gone),  # a subclass of Expired: any 410 means re-list
    (status(410, ""), 410, Expired),
    (status(403, "Forbidden"), 403, Forbidden),
    (status(401, "Unauthorized"), 401, Unauthorized),
    (status(429, "TooManyRequests"), 429, TooManyRequests),
    (status(503, "ServiceUnavailable"), 503, ServiceUnavailable),
    (status(404, ""), 404, NotFound),  # no reason: the code decides
    (status(418, "Teapot"), 418, ApiError),
    ("<html>bad gateway</html>", 503, ServiceUnavailable),  # not a Status: the code decides
    ("plain text", 404, NotFound),
])
def test_error_class_from_status(body, code, cls):
    error = error_from_status(body, code)
    assert type(error) is cls
    assert error.code == code
    assert isinstance(error, ApiError)


def test_already_exists_is_a_conflict_and_gone_is_expired():
    assert isinstance(error_from_status(status(409, "AlreadyExists")), Conflict)
    assert isinstance(error_from_status(status(410, "Gone")), Expired)


def test_error_carries_status_reason_message_and_causes():
    causes = [{"field": "spec.replicas", "reason": "FieldValueInvalid", "message": "must be >= 0"}]
    error = error_from_status(status(422, "Invalid", 'Deployment "d" is invalid', causes=causes), 422)
    assert error.reason == "Invalid"
    assert error.message == 'Deployment "d" is invalid'
    assert error.status["details"]["causes"] == causes
    assert error.causes == causes
    assert "Invalid" in str(error)


def test_text_body_keeps_the_text_as_message():
    error = error_from_status("upstream down", 503)
    assert error.message == "upstream down"
    assert error.status["kind"] == "Status"
    assert error.reason == "ServiceUnavailable"


def test_retry_after_seconds_from_details():
    assert error_from_status(status(429, "TooManyRequests", retryAfterSeconds=3)).retry_after_seconds == 3.0
    assert error_from_status(status(429, "TooManyRequests")).retry_after_seconds is None
