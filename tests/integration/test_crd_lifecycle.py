"""A CustomResourceDefinition's whole life against a real server, with real kubectl and the official client.

Create a CRD -> Established within a second -> discovery and OpenAPI (`api-resources`, `explain`) ->
custom objects: CRUD, watch, merge/JSON/apply patches (strategic merge is refused with 415) ->
validation (422) -> pruning and defaults -> status and scale subresources -> printer columns ->
two versions -> cluster scope -> deleting the CRD deletes its objects.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

pytestmark = pytest.mark.timeout(120)

GROUP = "stable.example.com"
CRONTABS = f"crontabs.{GROUP}"

CRONTAB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRONTABS},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "description": "CronTabSpec says when to run what.",
                                "required": ["cronSpec"],
                                "properties": {
                                    "cronSpec": {
                                        "type": "string",
                                        "description": "When to run, in cron syntax.",
                                        "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
                                    },
                                    "image": {"type": "string", "default": "busybox"},
                                    "replicas": {"type": "integer", "minimum": 0, "default": 1},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "replicas": {"type": "integer"},
                                    "selector": {"type": "string"},
                                    "phase": {"type": "string"},
                                },
                            },
                        },
                    }
                },
            },
            {
                # A second served version; conversion strategy None: only apiVersion changes.
                "name": "v1beta1",
                "served": True,
                "storage": False,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            },
        ],
    },
}

CLUSTER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"clusterwidgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"plural": "clusterwidgets", "singular": "clusterwidget", "kind": "ClusterWidget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}


def crontab(name: str, **spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronTab",
        "metadata": {"name": name, "labels": {"app": "cron"}},
        "spec": {"cronSpec": "*/5 * * * *", **spec},
    }


def ok(result) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def kubectl_json(kubectl, *args: str) -> dict:
    return json.loads(ok(kubectl(*args, "-o", "json")))


def retry_kubectl(kubectl, *args: str, input: str | None = None, seconds: float = 10.0):
    """kubectl's cached discovery learns a new kind on its next miss: retry until it does."""
    deadline = time.monotonic() + seconds
    while True:
        result = kubectl(*args, input=input)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture
def api(kubeconfig):
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def wait_established(extensions: k8s.ApiextensionsV1Api, name: str, within: float) -> float:
    started = time.monotonic()
    while True:
        crd = extensions.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])} if crd.status else {}
        if conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True":
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{name} not established: {conditions}"
        time.sleep(0.02)


def test_crd_lifecycle_with_kubectl_and_the_official_client(kubectl, api, tmp_path):
    extensions = k8s.ApiextensionsV1Api(api)
    objects = k8s.CustomObjectsApi(api)

    # --- the CRD is accepted and established within a second ---
    manifest = tmp_path / "crd.yaml"
    manifest.write_text(yaml.safe_dump(CRONTAB_CRD))
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRONTABS} created" in ok(
        kubectl("apply", "-f", str(manifest))
    )
    assert wait_established(extensions, CRONTABS, within=1.0) < 1.0
    crd = kubectl_json(kubectl, "get", "crd", CRONTABS)
    assert crd["status"]["acceptedNames"]["kind"] == "CronTab"
    assert crd["status"]["storedVersions"] == ["v1"]
    ok(kubectl("wait", "--for=condition=established", f"crd/{CRONTABS}", "--timeout=5s"))

    # --- discovery and OpenAPI ---
    resources = ok(retry_kubectl(kubectl, "api-resources", f"--api-group={GROUP}")).splitlines()
    assert resources[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert resources[1].split() == ["crontabs", "ct", f"{GROUP}/v1", "true", "CronTab"]
    explained = ok(retry_kubectl(kubectl, "explain", "crontab.spec"))
    assert f"GROUP:      {GROUP}\nKIND:       CronTab\nVERSION:    v1\n" in explained
    assert "CronTabSpec says when to run what." in explained
    assert "cronSpec\t<string> -required-" in explained and "When to run, in cron syntax." in explained

    # --- create and read with kubectl; defaults fill what is absent ---
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(crontab("first", replicas=2)))
    assert ok(retry_kubectl(kubectl, "apply", "-f", str(first))) == f"crontab.{GROUP}/first created\n"
    obj = kubectl_json(kubectl, "get", "ct", "first")
    assert obj["apiVersion"] == f"{GROUP}/v1" and obj["kind"] == "CronTab"
    assert obj["spec"] == {"cronSpec": "*/5 * * * *", "image": "busybox", "replicas": 2}
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["uid"]
    assert ok(kubectl("apply", "-f", str(first))) == f"crontab.{GROUP}/first unchanged\n"
    # Client-side apply of a custom kind sends a JSON merge patch: a field dropped from the manifest
    # goes, and the schema's default comes back.
    first.write_text(yaml.safe_dump(crontab("first", replicas=2, image="nginx")))
    assert ok(kubectl("apply", "-f", str(first))) == f"crontab.{GROUP}/first configured\n"
    assert kubectl_json(kubectl, "get", "ct", "first")["spec"]["image"] == "nginx"
    first.write_text(yaml.safe_dump(crontab("first", replicas=2)))
    assert ok(kubectl("apply", "-f", str(first))) == f"crontab.{GROUP}/first configured\n"
    assert kubectl_json(kubectl, "get", "ct", "first")["spec"]["image"] == "busybox"

    # --- the official client: create, list by label, replace, watch ---
    created = objects.create_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", crontab("second", image="nginx")
    )
    assert created["spec"] == {"cronSpec": "*/5 * * * *", "image": "nginx", "replicas": 1}
    listed = objects.list_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", label_selector="app=cron"
    )
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == ["first", "second"]
    assert listed["kind"] == "CronTabList"
    events: list[tuple[str, str, int]] = []
    watcher = watch.Watch()

    def follow() -> None:
        for event in watcher.stream(
            objects.list_namespaced_custom_object,
            GROUP,
            "v1",
            "default",
            "crontabs",
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ):
            events.append(
                (event["type"], event["object"]["metadata"]["name"], event["object"]["spec"]["replicas"])
            )
            if event["type"] == "DELETED":
                watcher.stop()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    created["spec"]["replicas"] = 4
    replaced = objects.replace_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "second", created)
    assert replaced["spec"]["replicas"] == 4 and replaced["metadata"]["generation"] == 2

    # --- patches: merge, JSON, server-side apply; strategic merge is not for custom resources ---
    assert "patched" in ok(kubectl("patch", "ct", "second", "--type=merge", "-p", '{"spec":{"replicas":5}}'))
    assert "patched" in ok(
        kubectl(
            "patch",
            "ct",
            "second",
            "--type=json",
            "-p",
            '[{"op":"replace","path":"/spec/image","value":"nginx:2"},'
            '{"op":"test","path":"/spec/replicas","value":5}]',
        )
    )
    result = kubectl("patch", "ct", "second", "--type=strategic", "-p", '{"spec":{"replicas":6}}')
    assert result.returncode != 0 and "application/merge-patch+json" in result.stderr, result.stderr  # 415
    patched = objects.patch_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", "second", {"spec": {"replicas": 7}}
    )
    assert patched["spec"]["replicas"] == 7 and patched["spec"]["image"] == "nginx:2"
    applied = tmp_path / "applied.yaml"
    applied.write_text(yaml.safe_dump(crontab("applied", replicas=3, image="redis")))
    assert "serverside-applied" in ok(kubectl("apply", "--server-side", "-f", str(applied)))
    obj = kubectl_json(kubectl, "get", "ct", "applied", "--show-managed-fields")
    assert ("kubectl", "Apply") in {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert obj["spec"]["replicas"] == 3
    ok(kubectl("patch", "ct", "applied", "--type=merge", "-p", '{"spec":{"replicas":9}}'))
    result = kubectl("apply", "--server-side", "-f", str(applied))
    assert result.returncode != 0 and "conflict" in result.stderr and ".spec.replicas" in result.stderr
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(applied)))
    assert kubectl_json(kubectl, "get", "ct", "applied")["spec"]["replicas"] == 3

    objects.delete_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "second")
    follower.join(timeout=10)
    assert not follower.is_alive()
    assert events[0] == ("MODIFIED", "second", 4)
    assert ("MODIFIED", "second", 7) in events and events[-1][0] == "DELETED"

    # --- validation: 422 with causes; unknown fields are pruned (or refused when strict) ---
    result = kubectl("create", "-f", "-", input=json.dumps(crontab("bad", replicas=-1, cronSpec="often")))
    assert result.returncode != 0 and "is invalid" in result.stderr
    assert "spec.replicas" in result.stderr and "spec.cronSpec" in result.stderr
    with pytest.raises(ApiException) as error:
        objects.create_namespaced_custom_object(
            GROUP, "v1", "default", "crontabs", {**crontab("bad"), "spec": {"replicas": 1}}
        )
    assert error.value.status == 422
    body = json.loads(error.value.body)
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "CronTab"
    assert any(c["field"] == "spec.cronSpec" for c in body["details"]["causes"])
    result = kubectl("create", "-f", "-", input=json.dumps(crontab("strict", shape="round")))
    assert result.returncode != 0 and 'unknown field "spec.shape"' in result.stderr
    pruned = objects.create_namespaced_custom_object(
        GROUP,
        "v1",
        "default",
        "crontabs",
        {**crontab("pruned", shape="round", extra={"free": {"form": [1, 2]}}), "top": "level"},
    )
    assert "shape" not in pruned["spec"] and "top" not in pruned
    assert pruned["spec"]["extra"] == {"free": {"form": [1, 2]}}  # x-kubernetes-preserve-unknown-fields
    assert pruned["spec"]["image"] == "busybox" and pruned["spec"]["replicas"] == 1

    # --- status subresource: the main resource ignores status, /status changes only status ---
    with_status = objects.patch_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", "first", {"status": {"phase": "Ignored"}, "spec": {"replicas": 3}}
    )
    assert "status" not in with_status and with_status["spec"]["replicas"] == 3
    status = objects.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        "default",
        "crontabs",
        "first",
        {"status": {"phase": "Running", "replicas": 3, "selector": "app=cron"}, "spec": {"replicas": 8}},
    )
    assert status["status"] == {"phase": "Running", "replicas": 3, "selector": "app=cron"}
    assert status["spec"]["replicas"] == 3
    assert "patched" in ok(
        kubectl(
            "patch",
            "ct",
            "first",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"phase":"Done"}}',
        )
    )
    assert kubectl_json(kubectl, "get", "ct", "first")["status"]["phase"] == "Done"

    # --- scale subresource: kubectl scale and the official client ---
    assert ok(kubectl("scale", "ct", "first", "--replicas=5")) == f"crontab.{GROUP}/first scaled\n"
    obj = kubectl_json(kubectl, "get", "ct", "first")
    assert obj["spec"]["replicas"] == 5 and obj["metadata"]["generation"] > 1
    scale = objects.get_namespaced_custom_object_scale(GROUP, "v1", "default", "crontabs", "first")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 5} and scale["status"] == {"replicas": 3, "selector": "app=cron"}
    scaled = objects.patch_namespaced_custom_object_scale(
        GROUP, "v1", "default", "crontabs", "first", {"spec": {"replicas": 2}}
    )
    assert scaled["spec"]["replicas"] == 2
    assert (
        objects.get_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "first")["spec"]["replicas"]
        == 2
    )
    result = kubectl("scale", "ct", "first", "--replicas=-3")
    assert result.returncode != 0

    # --- printer columns in kubectl get (Age is rendered by the server, as for built-in kinds) ---
    lines = ok(kubectl("get", "crontabs")).splitlines()
    assert lines[0].split() == ["NAME", "SPEC", "REPLICAS", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["first"][1:6] == ["*/5", "*", "*", "*", "*"] and rows["first"][6] == "2"
    assert rows["first"][7].endswith("s")
    wide = ok(kubectl("get", "ct", "applied", "-o", "wide")).splitlines()
    assert wide[0].split() == ["NAME", "SPEC", "REPLICAS", "IMAGE", "AGE"]
    assert wide[1].split()[6:8] == ["3", "redis"]

    # --- two versions of one stored object: only apiVersion differs ---
    beta = kubectl_json(kubectl, "get", f"crontabs.v1beta1.{GROUP}", "first")
    assert beta["apiVersion"] == f"{GROUP}/v1beta1" and beta["spec"]["replicas"] == 2
    through_beta = objects.create_namespaced_custom_object(
        GROUP,
        "v1beta1",
        "default",
        "crontabs",
        {
            "apiVersion": f"{GROUP}/v1beta1",
            "kind": "CronTab",
            "metadata": {"name": "from-beta"},
            "spec": {"cronSpec": "* * * * *", "anything": "goes"},
        },
    )
    assert through_beta["apiVersion"] == f"{GROUP}/v1beta1" and through_beta["spec"]["anything"] == "goes"
    as_v1 = objects.get_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "from-beta")
    assert as_v1["apiVersion"] == f"{GROUP}/v1"
    beta_list = objects.list_namespaced_custom_object(GROUP, "v1beta1", "default", "crontabs")
    assert {item["apiVersion"] for item in beta_list["items"]} == {f"{GROUP}/v1beta1"}

    # --- a cluster-scoped kind ---
    extensions.create_custom_resource_definition(CLUSTER_CRD)
    wait_established(extensions, f"clusterwidgets.{GROUP}", within=1.0)
    widget = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterWidget",
        "metadata": {"name": "big"},
        "spec": {"size": 9},
    }
    made = objects.create_cluster_custom_object(GROUP, "v1", "clusterwidgets", widget)
    assert "namespace" not in made["metadata"]
    resources = ok(
        retry_kubectl(kubectl, "api-resources", f"--api-group={GROUP}", "--namespaced=false")
    ).splitlines()
    assert [line.split()[0] for line in resources[1:]] == ["clusterwidgets"]
    out = ok(retry_kubectl(kubectl, "get", "clusterwidgets"))
    assert out.splitlines()[1].split()[0] == "big"
    with pytest.raises(ApiException) as error:
        objects.create_namespaced_custom_object(GROUP, "v1", "default", "clusterwidgets", widget)
    assert error.value.status == 404

    # --- deleting a CRD deletes its objects first, honouring their finalizers, then stops serving ---
    assert (
        "customresourcecleanup.apiextensions.k8s.io"
        in kubectl_json(kubectl, "get", "crd", CRONTABS)["metadata"]["finalizers"]
    )
    objects.patch_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", "first", {"metadata": {"finalizers": ["example.com/hold"]}}
    )
    assert f'"{CRONTABS}" deleted' in ok(kubectl("delete", "crd", CRONTABS, "--wait=false"))

    def terminating_with_only_first_left() -> bool:
        crd = kubectl_json(kubectl, "get", "crd", CRONTABS)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        names = [
            item["metadata"]["name"]
            for item in objects.list_cluster_custom_object(GROUP, "v1", "crontabs")["items"]
        ]
        return conditions.get("Terminating") == "True" and names == ["first"]

    deadline = time.monotonic() + 10
    while not terminating_with_only_first_left():
        assert time.monotonic() < deadline, "the CRD's objects were not deleted"
        time.sleep(0.05)
    held = objects.get_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "first")
    assert held["metadata"]["deletionTimestamp"]  # served while terminating: its finalizer can still go
    objects.patch_namespaced_custom_object(
        GROUP, "v1", "default", "crontabs", "first", {"metadata": {"finalizers": None}}
    )
    ok(kubectl("wait", "--for=delete", f"crd/{CRONTABS}", "--timeout=10s"))
    with pytest.raises(ApiException) as error:
        objects.list_namespaced_custom_object(GROUP, "v1", "default", "crontabs")
    assert error.value.status == 404
    assert "crontabs" not in ok(kubectl("api-resources", f"--api-group={GROUP}"))
    # The same CRD created again starts empty: its old objects went with it.
    extensions.create_custom_resource_definition(CRONTAB_CRD)
    wait_established(extensions, CRONTABS, within=1.0)
    assert objects.list_cluster_custom_object(GROUP, "v1", "crontabs")["items"] == []
    # The cluster-scoped kind is untouched, and `kubectl delete crd` waits until its objects are gone.
    assert objects.get_cluster_custom_object(GROUP, "v1", "clusterwidgets", "big")["spec"] == {"size": 9}
    ok(kubectl("delete", "crd", f"clusterwidgets.{GROUP}", "--timeout=20s"))
    with pytest.raises(ApiException) as error:
        objects.get_cluster_custom_object(GROUP, "v1", "clusterwidgets", "big")
    assert error.value.status == 404


def test_custom_resources_are_served_again_after_a_restart(tmp_path):
    from tests.conftest import ServerThread

    from pinnace.apiserver.server import ServerConfig

    settings = {"port": 0, "bind_address": "127.0.0.1", "event_sweep_interval": 3600.0}
    runner = ServerThread(ServerConfig(data_dir=tmp_path / "server", **settings))
    server = runner.start()
    try:
        api_client = config.new_client_from_config(config_file=str(server.kubeconfig_path))
        extensions = k8s.ApiextensionsV1Api(api_client)
        extensions.create_custom_resource_definition(CRONTAB_CRD)
        wait_established(extensions, CRONTABS, within=1.0)
        k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
            GROUP, "v1", "default", "crontabs", crontab("kept", replicas=2)
        )
        api_client.close()
    finally:
        runner.stop()
    runner = ServerThread(ServerConfig(data_dir=tmp_path / "server", **settings))
    server = runner.start()
    try:
        api_client = config.new_client_from_config(config_file=str(server.kubeconfig_path))
        objects = k8s.CustomObjectsApi(api_client)
        # Served from the first request on: the server reads its CRDs before it listens.
        kept = objects.get_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "kept")
        assert kept["spec"]["replicas"] == 2
        scale = objects.get_namespaced_custom_object_scale(GROUP, "v1", "default", "crontabs", "kept")
        assert scale["spec"]["replicas"] == 2
        resources = objects.get_api_resources(GROUP, "v1")
        assert "crontabs/scale" in [resource.name for resource in resources.resources]
        api_client.close()
    finally:
        runner.stop()


def test_stored_versions_and_no_creates_while_the_crd_terminates(api):
    extensions = k8s.ApiextensionsV1Api(api)
    custom = k8s.CustomObjectsApi(api)
    created = api.sanitize_for_serialization(extensions.create_custom_resource_definition(CRONTAB_CRD))
    assert created["status"]["storedVersions"] == ["v1"]
    wait_established(extensions, CRONTABS, within=5)
    assert extensions.read_custom_resource_definition(CRONTABS).status.stored_versions == ["v1"]

    # An object with a finalizer keeps the CRD Terminating while it stays.
    held = crontab("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    custom.create_namespaced_custom_object(GROUP, "v1", "default", "crontabs", held)
    extensions.delete_custom_resource_definition(CRONTABS)
    deadline = time.monotonic() + 10
    while True:
        try:
            custom.create_namespaced_custom_object(GROUP, "v1", "default", "crontabs", crontab("late"))
        except ApiException as error:
            assert error.status == 405, error.body
            status = json.loads(error.body)
            assert status["reason"] == "MethodNotAllowed"
            assert status["message"] == "create not allowed while custom resource definition is terminating"
            break
        custom.delete_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "late")
        assert time.monotonic() < deadline, "creates were still accepted after the CRD was deleted"
        time.sleep(0.05)
    # Reads and updates still work, so a controller can let go of its objects.
    custom.patch_namespaced_custom_object(GROUP, "v1", "default", "crontabs", "held", {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 15
    while True:
        try:
            extensions.read_custom_resource_definition(CRONTABS)
        except ApiException as error:
            assert error.status == 404
            break
        assert time.monotonic() < deadline, "the CRD was not removed once its objects were gone"
        time.sleep(0.1)
