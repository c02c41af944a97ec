"""Schema validation (unknown fields, types, required), metadata rules and defaults."""

import pytest

from pinnace.api import defaults
from pinnace.api.validation import duplicate_fields, name_problems, validate_metadata, validate_schema


def test_unknown_fields_and_type_errors_are_told_apart():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containerz": [], "containers": [{"name": "a", "image": 5}]}}
    result = validate_schema("", "v1", "Pod", pod)
    assert result.unknown_fields == ["spec.containerz"]
    assert result.type_errors == ['spec.containers[0].image: 5 is not of types "null", "string"']
    assert result.causes == []


def test_schema_required_lists_are_not_enforced():
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"nodeInfo": {"kubeletVersion": "v1.32.0"}}}
    result = validate_schema("", "v1", "Node", node)
    assert (result.unknown_fields, result.type_errors, result.causes) == ([], [], [])


def test_duplicate_fields():
    assert duplicate_fields(b'{"a":1,"b":{"c":1,"c":2}}') == ["c"]
    assert duplicate_fields(b'{"a":1}') == []


@pytest.mark.parametrize(
    "kind, name, ok",
    [("Pod", "web-1", True), ("Pod", "web.example", True), ("Pod", "Web", False), ("Namespace", "a.b", False),
     ("Service", "1abc", False), ("Service", "abc-1", True), ("ClusterRole", "system:controller:x", True)],
)
def test_name_rules_per_kind(kind, name, ok):
    assert (not name_problems(kind, name)) is ok


def test_finalizer_and_owner_reference_rules():
    causes = validate_metadata("ConfigMap", {"name": "c", "finalizers": ["example.com/ok", "bad finalizer!"]}, True)
    assert [c["field"] for c in causes] == ["metadata.finalizers[1]"]
    refs = [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "controller": True}, {"apiVersion": "v1", "kind": "Pod", "name": "q", "controller": True}]
    causes = validate_metadata("ConfigMap", {"name": "c", "ownerReferences": refs}, True)
    assert [c["field"] for c in causes] == ["metadata.ownerReferences[1].uid", "metadata.ownerReferences"]


def test_label_and_annotation_rules():
    causes = validate_metadata("ConfigMap", {"name": "c", "labels": {"bad key!": "v", "ok": "bad value!"}}, True)
    assert [c["field"] for c in causes] == ["metadata.labels", "metadata.labels"]
    assert validate_metadata("ConfigMap", {"generateName": "c-"}, True) == []
    assert validate_metadata("ConfigMap", {}, True)[0]["reason"] == "FieldValueRequired"


@pytest.mark.parametrize(
    "image, policy",
    [("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
     ("registry:5000/app", "Always"), ("registry:5000/app:v1", "IfNotPresent"), ("app@sha256:abc", "IfNotPresent")],
)
def test_image_pull_policy_from_tag(image, policy):
    assert defaults.image_pull_policy(image) == policy


def test_service_and_workload_defaults():
    service = {"spec": {"ports": [{"port": 80}]}}
    defaults.apply_defaults("v1/services", service)
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["sessionAffinity"] == "None"
    assert service["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    rs = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}
    defaults.apply_defaults("apps/v1/replicasets", rs)
    assert rs["spec"]["replicas"] == 1 and rs["spec"]["template"]["spec"]["restartPolicy"] == "Always"


def test_qos_class():
    assert defaults.qos_class({"containers": [{}]}) == "BestEffort"
    guaranteed = {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}
    assert defaults.qos_class(guaranteed) == "Guaranteed"
    assert defaults.qos_class({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}) == "Burstable"
