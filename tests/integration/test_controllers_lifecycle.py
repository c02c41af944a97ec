"""Node lifecycle, garbage collection, namespaces and per-namespace defaults, against a real server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.integration.node_double import Cluster, deployment, eventually, start_cluster, stop_cluster

from pinnace.client import ApiError, NotFound


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == type_), {})


async def gone(client, resource: str, name: str, namespace: str | None = "default") -> bool:
    try:
        await client.get(resource, name, namespace=namespace)
    except NotFound:
        return True
    return False


async def test_silent_node_is_tainted_and_its_pods_move(client):
    cluster = await start_cluster(client, controllers=["replicaset", "deployment", "nodelifecycle", "nodeipam"],
                                  node_monitor_grace_period=2.0, node_monitor_period=0.5)
    try:
        tolerations = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                        "tolerationSeconds": 1}]
        body = deployment("mover", 4)
        body["spec"]["template"]["spec"]["tolerations"] = tolerations
        await client.create("apps/v1/deployments", body, namespace="default")

        async def spread():
            pods = [p for p in await cluster.pods(selector="app=mover") if condition(p, "Ready").get("status") == "True"]
            return len(pods) == 4 and {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}
        await eventually(spread, timeout=20)

        # Every node got its own pod CIDR.
        nodes = (await client.list("v1/nodes"))["items"]
        cidrs = {n["spec"].get("podCIDR") for n in nodes}
        assert len(cidrs) == 2 and all(c and c.startswith("10.42.") and c.endswith("/24") for c in cidrs)

        cluster.nodes.stop("node-1")

        async def unreachable():
            node = await client.get("v1/nodes", "node-1")
            keys = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or ()}
            return condition(node, "Ready").get("status") == "Unknown" and (
                ("node.kubernetes.io/unreachable", "NoExecute") in keys)
        await eventually(unreachable, timeout=15)

        async def moved():
            pods = [p for p in await cluster.pods(selector="app=mover") if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in pods if condition(p, "Ready").get("status") == "True"]
            return len(ready) == 4 and {p["spec"]["nodeName"] for p in ready} == {"node-2"}
        await eventually(moved, timeout=20)
    finally:
        await stop_cluster(cluster)


@pytest.fixture
async def gc_cluster(client):
    cluster = await start_cluster(client, controllers=["replicaset", "deployment", "garbagecollector", "namespace",
                                                       "serviceaccount", "endpoints", "endpointslice"])
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


def replica_set(name: str, replicas: int = 2) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


async def owned_pods(cluster: Cluster, app: str, count: int) -> list[dict] | None:
    pods = await cluster.pods(selector=f"app={app}")
    return pods if len(pods) == count and all(p["metadata"].get("ownerReferences") for p in pods) else None


async def test_garbage_collection_background_foreground_orphan(gc_cluster: Cluster):
    cluster, client = gc_cluster, gc_cluster.client

    # Background: the owner goes at once, its dependents after it.
    await client.create("apps/v1/replicasets", replica_set("bg"), namespace="default")
    await eventually(lambda: owned_pods(cluster, "bg", 2))
    await client.delete("apps/v1/replicasets", "bg", namespace="default", propagation_policy="Background")
    await eventually(lambda: _none_left(cluster, "app=bg"))

    # Foreground: the owner stays (with the finalizer) until its dependents are gone, then goes.
    await client.create("apps/v1/deployments", deployment("fg", 2), namespace="default")
    await eventually(lambda: owned_pods(cluster, "fg", 2))
    await client.delete("apps/v1/deployments", "fg", namespace="default", propagation_policy="Foreground")
    during = await client.get("apps/v1/deployments", "fg", namespace="default")
    assert "foregroundDeletion" in during["metadata"]["finalizers"]
    await eventually(lambda: gone(client, "apps/v1/deployments", "fg"))
    assert not await cluster.pods(selector="app=fg")
    assert not (await client.list("apps/v1/replicasets", namespace="default", label_selector="app=fg"))["items"]

    # Orphan: the owner goes, its dependents stay and lose the owner reference.
    await client.create("apps/v1/replicasets", replica_set("or"), namespace="default")
    await eventually(lambda: owned_pods(cluster, "or", 2))
    await client.delete("apps/v1/replicasets", "or", namespace="default", propagation_policy="Orphan")
    await eventually(lambda: gone(client, "apps/v1/replicasets", "or"))
    pods = await cluster.pods(selector="app=or")
    assert len(pods) == 2 and not any(p["metadata"].get("ownerReferences") for p in pods)

    # A dependent whose owner never existed is collected.
    ghost = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "ghost", "ownerReferences": [
                 {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "never", "uid": "0000-never"}]}}
    await client.create("v1/configmaps", ghost, namespace="default")
    await eventually(lambda: gone(client, "v1/configmaps", "ghost"))

    # Owner references in a cycle do not block a foreground deletion.
    a = await client.create("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                            namespace="default")
    b = await client.create("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "b", "ownerReferences": [_ref(a)]}}, namespace="default")
    await client.patch("v1/configmaps", "a", {"metadata": {"ownerReferences": [_ref(b)]}}, namespace="default")
    await client.delete("v1/configmaps", "a", namespace="default", propagation_policy="Foreground")
    await eventually(lambda: _both_gone(client))


def _ref(obj: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
            "blockOwnerDeletion": True}


async def _both_gone(client) -> bool:
    return await gone(client, "v1/configmaps", "a") and await gone(client, "v1/configmaps", "b")


async def _none_left(cluster: Cluster, selector: str) -> bool:
    return not await cluster.pods(selector=selector)


async def test_namespace_deletion_removes_everything(gc_cluster: Cluster):
    client = gc_cluster.client
    await client.create("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})

    async def defaults_present():
        await client.get("v1/serviceaccounts", "default", namespace="doomed")
        ca = await client.get("v1/configmaps", "kube-root-ca.crt", namespace="doomed")
        return "BEGIN CERTIFICATE" in ca["data"]["ca.crt"]
    await eventually(defaults_present)

    body = deployment("app", 2)
    body["metadata"]["namespace"] = "doomed"
    await client.create("apps/v1/deployments", body, namespace="doomed")
    await client.create("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                          "data": {"a": "b"}}, namespace="doomed")
    await client.create("v1/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
                                        "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]}},
                        namespace="doomed")
    custom = await _maybe_custom_resource(client)
    await eventually(lambda: _pods_in(client, "doomed", 2))

    await client.delete("v1/namespaces", "doomed")
    ns = await client.get("v1/namespaces", "doomed")
    assert ns["status"]["phase"] == "Terminating"
    await eventually(lambda: gone(client, "v1/namespaces", "doomed", None), timeout=30)
    for resource in ("v1/pods", "apps/v1/deployments", "apps/v1/replicasets", "v1/configmaps", "v1/services",
                     *([custom] if custom else [])):
        with contextlib.suppress(NotFound):
            assert not (await client.list(resource, namespace="doomed"))["items"], resource


async def _pods_in(client, namespace: str, count: int) -> bool:
    pods = (await client.list("v1/pods", namespace=namespace))["items"]
    return len(pods) == count


async def _maybe_custom_resource(client) -> str | None:
    """A CRD and one custom object in `doomed`, when this server serves custom resources."""
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    try:
        await client.create("apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        for _ in range(10):
            try:
                await client.create("example.com/v1/widgets", {"apiVersion": "example.com/v1", "kind": "Widget",
                                                               "metadata": {"name": "w"}}, namespace="doomed")
                return "example.com/v1/widgets"
            except NotFound:
                client.invalidate_discovery()
                await asyncio.sleep(0.1)
    except ApiError:
        pass
    return None
