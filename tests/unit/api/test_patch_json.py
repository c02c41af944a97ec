"""RFC 6902 JSON patch on Kubernetes objects (kubectl patch --type=json, rollout undo)."""

import pytest

from pinnace.api.patch import BadRequest, Invalid, json_patch

POD = {
    "metadata": {"name": "p", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "busybox"}]},
}


@pytest.mark.parametrize(
    "ops, check",
    [
        (
            [{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:2"}],
            lambda o: o["spec"]["containers"][0]["image"] == "nginx:2",
        ),
        (
            [{"op": "add", "path": "/metadata/labels/tier", "value": "front"}],
            lambda o: o["metadata"]["labels"] == {"app": "web", "tier": "front"},
        ),
        (
            [{"op": "add", "path": "/spec/containers/-", "value": {"name": "c", "image": "x"}}],
            lambda o: [c["name"] for c in o["spec"]["containers"]] == ["a", "b", "c"],
        ),
        (
            [{"op": "add", "path": "/spec/containers/0", "value": {"name": "z", "image": "x"}}],
            lambda o: [c["name"] for c in o["spec"]["containers"]] == ["z", "a", "b"],
        ),
        (
            [{"op": "remove", "path": "/spec/containers/1"}],
            lambda o: [c["name"] for c in o["spec"]["containers"]] == ["a"],
        ),
        (
            [{"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels/name"}],
            lambda o: o["metadata"]["labels"] == {"name": "web"},
        ),
        (
            [{"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"}],
            lambda o: o["spec"]["containers"][2] == {"name": "a", "image": "nginx:1"},
        ),
        (
            [
                {"op": "test", "path": "/metadata/name", "value": "p"},
                {"op": "replace", "path": "/metadata/name", "value": "q"},
            ],
            lambda o: o["metadata"]["name"] == "q",
        ),
        (
            [
                {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
                {"op": "replace", "path": "/metadata/annotations/a~0b~1c", "value": "2"},
            ],
            lambda o: o["metadata"]["annotations"] == {"a~b/c": "2"},
        ),
    ],
)
def test_json_patch_operations(ops, check):
    result = json_patch(POD, ops)
    assert check(result)
    assert POD["spec"]["containers"][0]["image"] == "nginx:1"  # the input is not modified


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/name", "value": "other"}],
        [{"op": "remove", "path": "/metadata/nosuch"}],
        [{"op": "replace", "path": "/spec/nosuch/x", "value": 1}],
        [{"op": "add", "path": "/spec/containers/9", "value": {}}],
        [{"op": "move", "from": "/metadata", "path": "/metadata/child"}],
    ],
)
def test_json_patch_failures_are_invalid(ops):
    with pytest.raises(Invalid):
        json_patch(POD, ops)


def test_json_patch_rejects_malformed_operations():
    with pytest.raises(BadRequest):
        json_patch(POD, {"op": "add"})
    with pytest.raises(BadRequest):
        json_patch(POD, [{"op": "frobnicate", "path": "/a"}])
    with pytest.raises(BadRequest):
        json_patch(POD, [{"op": "add", "path": "/a"}])


def test_json_patch_test_compares_json_values():
    assert json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]) == {"a": 1}
    with pytest.raises(Invalid):
        json_patch({"a": True}, [{"op": "test", "path": "/a", "value": 1}])
