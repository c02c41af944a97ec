"""The official `kubernetes` Python client, unchanged, against a real server over TLS."""

from __future__ import annotations

import threading
import time

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402


@pytest.fixture
def api(kubeconfig):
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def test_crud_with_typed_models(api):
    core = k8s.CoreV1Api(api)
    body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings", labels={"app": "demo"}), data={"a": "1"})
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.data == {"a": "1"}
    read = core.read_namespaced_config_map("settings", "default")
    read.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("settings", "default", read)
    assert replaced.data == {"a": "1", "b": "2"}
    patched = core.patch_namespaced_config_map("settings", "default", {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"app": "demo", "patched": "yes"}
    listed = core.list_namespaced_config_map("default", label_selector="app=demo")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    status = core.delete_namespaced_config_map("settings", "default")
    assert (status["status"] if isinstance(status, dict) else status.status) == "Success"
    with pytest.raises(ApiException) as error:
        core.read_namespaced_config_map("settings", "default")
    assert error.value.status == 404


def test_deployments_and_scale(api):
    apps = k8s.AppsV1Api(api)
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="web"),
        spec=k8s.V1DeploymentSpec(
            selector=k8s.V1LabelSelector(match_labels={"app": "web"}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels={"app": "web"}),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="nginx:1.27")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment("default", deployment)
    assert created.spec.replicas == 1 and created.spec.strategy.type == "RollingUpdate"
    scale = apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 3
    all_namespaces = apps.list_deployment_for_all_namespaces()
    assert [d.metadata.name for d in all_namespaces.items] == ["web"]


def test_watch_streams_added_modified_deleted(api):
    core = k8s.CoreV1Api(api)
    initial = core.list_namespaced_pod("default")
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def follow() -> None:
        for event in w.stream(core.list_namespaced_pod, "default", resource_version=initial.metadata.resource_version,
                              timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    time.sleep(0.5)
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="w1"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="a", image="x")]))
    core.create_namespaced_pod("default", pod)
    core.patch_namespaced_pod("w1", "default", {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_pod("w1", "default")
    watcher.join(timeout=15)
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_errors_carry_status_bodies(api):
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dup")))
    with pytest.raises(ApiException) as error:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dup")))
    assert error.value.status == 409 and '"reason":"AlreadyExists"' in error.value.body


def test_discovery_roots_with_and_without_a_trailing_slash(api, api_server):
    groups = k8s.ApisApi(api).get_api_versions()  # GET /apis/
    names = {group.name for group in groups.groups}
    assert {"apps", "apiextensions.k8s.io", "metrics.k8s.io"} <= names
    assert k8s.CoreApi(api).get_api_versions().versions == ["v1"]  # GET /api/
    import urllib.request

    for path in ("/api", "/api/", "/apis", "/apis/"):
        with urllib.request.urlopen(api_server.insecure_url + path) as response:
            assert response.status == 200
