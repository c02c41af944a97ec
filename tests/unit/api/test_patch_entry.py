"""apply_patch: the API server's PATCH entry point, its content types and its Status errors."""

import orjson
import pytest

from pinnace.api.patch import (
    BadRequest,
    NotFound,
    UnsupportedMediaType,
    apply_patch,
    is_apply_content_type,
)

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
KW = {
    "group": "",
    "version": "v1",
    "kind": "ConfigMap",
    "field_manager": None,
    "force": False,
    "subresource": None,
}


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/merge-patch+json", {"data": {"b": "2"}}),
        ("application/strategic-merge-patch+json", {"data": {"b": "2"}}),
        ("application/json-patch+json", [{"op": "add", "path": "/data/b", "value": "2"}]),
        ("application/merge-patch+json; charset=utf-8", {"data": {"b": "2"}}),
    ],
)
def test_each_patch_type_applies(content_type, body):
    result = apply_patch(CM, orjson.dumps(body), content_type, is_custom=False, **KW)
    assert result["data"] == {"a": "1", "b": "2"}


def test_custom_resources_answer_415_for_strategic_merge_patch():
    with pytest.raises(UnsupportedMediaType) as caught:
        apply_patch(CM, b"{}", "application/strategic-merge-patch+json", is_custom=True, **KW)
    status = caught.value.status()
    assert status["code"] == 415 and status["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in status["message"]
    assert "data" not in apply_patch(
        CM, b'{"data":null}', "application/merge-patch+json", is_custom=True, **KW
    )


def test_unknown_content_type_is_415():
    with pytest.raises(UnsupportedMediaType):
        apply_patch(CM, b"{}", "application/json", is_custom=False, **KW)


def test_malformed_body_is_400_and_missing_object_is_404():
    with pytest.raises(BadRequest) as caught:
        apply_patch(CM, b"{not json", "application/merge-patch+json", is_custom=False, **KW)
    assert caught.value.status()["code"] == 400
    with pytest.raises(NotFound):
        apply_patch(None, b"{}", "application/merge-patch+json", is_custom=False, **KW)


def test_status_body_shape():
    error = BadRequest("nope", causes=[{"type": "x"}])
    assert error.status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "nope",
        "reason": "BadRequest",
        "details": {"causes": [{"type": "x"}]},
        "code": 400,
    }


def test_is_apply_content_type():
    assert is_apply_content_type("application/apply-patch+yaml; charset=utf-8")
    assert not is_apply_content_type("application/merge-patch+json")
