"""The kind registry: built from lightkube-models and the Kubernetes 1.32 schemas."""

from pinnace.api.kinds import registry


def test_core_and_group_resources():
    reg = registry()
    pods = reg.by_resource("v1/pods")
    assert (pods.kind, pods.namespaced, pods.short_names, pods.categories) == ("Pod", True, ("po",), ("all",))
    assert {"binding", "eviction", "log", "status"} <= set(pods.subresources)
    assert pods.subresources["eviction"].group == "policy"
    deployments = reg.by_kind("apps/v1", "Deployment")
    assert deployments.name == "apps/v1/deployments" and deployments.api_version == "apps/v1"
    assert deployments.subresources["scale"].kind == "Scale"
    assert "deletecollection" in deployments.verbs
    assert not reg.by_resource("v1/nodes").namespaced


def test_only_kinds_that_exist_in_kubernetes_1_32():
    reg = registry()
    names = {r.name for r in reg.resources}
    assert "networking.k8s.io/v1/ipaddresses" not in names  # GA only in 1.33
    assert "apiextensions.k8s.io/v1/customresourcedefinitions" in names
    assert set(reg.group_versions()) >= {"", "apps", "batch", "autoscaling", "policy", "coordination.k8s.io"}
    assert reg.group_versions()["autoscaling"] == ["v1", "v2"]
