"""Per-kind rules: immutability, grace periods, generation."""

import pytest

from pinnace.api.kinds import registry
from pinnace.apiserver.strategies import strategy_for


def strategy(resource: str):
    info = registry().by_resource(resource)
    return strategy_for(info.name, info.kind, info.group, info.plural, info.subresources)


def pod(**spec) -> dict:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "nginx:1"}], **spec}}


@pytest.mark.parametrize(
    "change, allowed",
    [
        (lambda p: p["spec"]["containers"][0].update(image="nginx:2"), True),
        (lambda p: p["spec"].update(activeDeadlineSeconds=5), True),
        (lambda p: p["spec"].update(nodeName="n1"), True),  # binding an unscheduled pod
        (lambda p: p["spec"].update(restartPolicy="Never"), False),
        (lambda p: p["spec"]["containers"][0].update(command=["sh"]), False),
    ],
)
def test_pod_spec_immutability(change, allowed):
    old, new = pod(), pod()
    change(new)
    assert (strategy("v1/pods").validate(new, old) == []) is allowed


@pytest.mark.parametrize(
    "spec, status, requested, seconds",
    [
        ({}, {}, None, 0),  # unscheduled: at once
        ({"nodeName": "n"}, {}, None, 30),
        ({"nodeName": "n", "terminationGracePeriodSeconds": 5}, {}, None, 5),
        ({"nodeName": "n"}, {}, 0, 0),
        ({"nodeName": "n"}, {"phase": "Succeeded"}, None, 0),  # finished: nothing to stop
    ],
)
def test_pod_grace_period(spec, status, requested, seconds):
    obj = {"spec": spec, "status": status}
    assert strategy("v1/pods").grace_period(obj, requested) == seconds


def test_only_spec_changes_move_the_generation():
    s = strategy("apps/v1/deployments")
    old = {"metadata": {"labels": {}}, "spec": {"replicas": 1}, "status": {}}
    assert not s.spec_changed({"metadata": {"labels": {"a": "b"}}, "spec": {"replicas": 1}, "status": {"x": 1}}, old)
    assert s.spec_changed({"metadata": {}, "spec": {"replicas": 2}}, old)


def test_status_is_dropped_on_create_except_for_nodes():
    deployment = {"metadata": {"name": "d"}, "spec": {}, "status": {"replicas": 5}}
    strategy("apps/v1/deployments").prepare_create(deployment)
    assert "status" not in deployment
    node = {"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}}
    strategy("v1/nodes").prepare_create(node)
    assert node["status"]["capacity"] == {"cpu": "2"}


def test_immutable_secret():
    old = {"immutable": True, "data": {"a": "MQ=="}}
    assert strategy("v1/secrets").validate({"immutable": True, "data": {"a": "Mg=="}}, old)[0]["field"] == "data"
    assert strategy("v1/secrets").validate(dict(old), old) == []


def crd(*versions: tuple[str, bool], status: dict | None = None) -> dict:
    obj = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": name, "served": True, "storage": storage} for name, storage in versions]},
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_a_new_crd_records_its_storage_version():
    created = crd(("v1", True), status={"storedVersions": ["v0"], "conditions": [{"type": "Established"}]})
    strategy("apiextensions.k8s.io/v1/customresourcedefinitions").prepare_create(created)
    assert created["status"] == {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": ["v1"]}


def test_a_new_storage_version_joins_stored_versions_and_old_ones_stay():
    old = crd(("v1", True), status={"storedVersions": ["v1"]})
    new = crd(("v1", False), ("v2", True), status={"storedVersions": []})
    strategy("apiextensions.k8s.io/v1/customresourcedefinitions").prepare_update(new, old)
    assert new["status"]["storedVersions"] == ["v1", "v2"]
    assert old["status"]["storedVersions"] == ["v1"]  # the stored object is not changed in place
