"""pinnace.client against a real API server: verbs, patch types, typed errors, discovery, subresources."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator

import pytest

from pinnace.apiserver.server import ApiServer, ServerConfig
from pinnace.client import AlreadyExists, Client, Conflict, Invalid, NotFound, Unauthorized


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    with tempfile.TemporaryDirectory(prefix="pinnace-client-") as data_dir:
        api = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1"))
        await api.start()
        try:
            yield api
        finally:
            await api.stop()


@pytest.fixture
async def kube(server: ApiServer) -> AsyncIterator[Client]:
    client = await Client.from_kubeconfig(server.kubeconfig_path)
    try:
        yield client
    finally:
        await client.close()


def pod(name: str, namespace: str | None = "default", **labels: str) -> dict:
    meta: dict = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"]}]}}


async def test_crud_and_typed_errors(kube: Client):
    created = await kube.create("v1/pods", pod("a"))
    assert created["metadata"]["uid"]
    with pytest.raises(AlreadyExists) as exists:
        await kube.create("v1/pods", pod("a"))
    assert exists.value.code == 409
    got = await kube.get("v1/pods", "a", namespace="default")
    got["metadata"]["labels"] = {"x": "1"}
    updated = await kube.update("v1/pods", got)
    assert updated["metadata"]["labels"] == {"x": "1"}
    with pytest.raises(Conflict):
        await kube.update("v1/pods", got)  # stale resourceVersion
    with pytest.raises(NotFound) as missing:
        await kube.get("v1/pods", "nosuch", namespace="default")
    assert missing.value.reason == "NotFound" and "nosuch" in missing.value.message
    with pytest.raises(Invalid):
        await kube.create("v1/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
                                      "spec": {"containers": [{"name": "c", "image": "x"}]}})
    await kube.delete("v1/pods", "a", namespace="default", grace_period_seconds=0)
    with contextlib.suppress(NotFound):
        # Graceful deletion may leave the pod terminating for a moment.
        assert (await kube.get("v1/pods", "a", namespace="default"))["metadata"].get("deletionTimestamp")


async def test_every_patch_type(kube: Client):
    await kube.create("v1/pods", pod("p"))
    merged = await kube.patch("v1/pods", "p", {"metadata": {"labels": {"m": "1"}}}, namespace="default")
    assert merged["metadata"]["labels"]["m"] == "1"
    strategic = await kube.patch("v1/pods", "p", {"metadata": {"annotations": {"s": "1"}}}, namespace="default",
                                 patch_type="strategic")
    assert strategic["metadata"]["annotations"]["s"] == "1"
    jsonpatch = await kube.patch("v1/pods", "p", [{"op": "add", "path": "/metadata/labels/j", "value": "1"}],
                                 namespace="default", patch_type="json")
    assert jsonpatch["metadata"]["labels"]["j"] == "1"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "default"},
          "data": {"k": "v"}}
    applied = await kube.apply("v1/configmaps", cm, field_manager="test")  # apply creates when missing
    assert applied["data"] == {"k": "v"}
    cm["data"] = {"k": "v2"}
    assert (await kube.patch("v1/configmaps", "applied", cm, namespace="default", patch_type="apply",
                             field_manager="test", force=True))["data"] == {"k": "v2"}


async def test_cluster_scoped_and_discovery(kube: Client):
    assert await kube.is_namespaced("v1/pods") is True
    assert await kube.is_namespaced("v1/nodes") is False
    assert await kube.resource_for("apps/v1", "Deployment") == "apps/v1/deployments"
    assert await kube.resource_for("coordination.k8s.io/v1", "Lease") == "coordination.k8s.io/v1/leases"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    await kube.create("v1/nodes", node)
    assert (await kube.get("v1/nodes", "n1"))["metadata"]["name"] == "n1"
    listed = await kube.list("v1/nodes")
    assert [n["metadata"]["name"] for n in listed["items"]] == ["n1"]


async def test_list_pages_selectors_and_delete_collection(kube: Client):
    for i in range(5):
        await kube.create("v1/pods", pod(f"p{i}", app="web" if i % 2 else "db"))
    page = await kube.list("v1/pods", namespace="default", limit=2)
    assert len(page["items"]) == 2 and page["metadata"].get("continue")
    everything = await kube.list_all("v1/pods", namespace="default", page_size=2)
    assert len(everything["items"]) == 5
    web = await kube.list("v1/pods", label_selector={"app": "web"})
    assert sorted(p["metadata"]["name"] for p in web["items"]) == ["p1", "p3"]
    named = await kube.list("v1/pods", field_selector="metadata.name=p4")
    assert [p["metadata"]["name"] for p in named["items"]] == ["p4"]
    await kube.delete_collection("v1/pods", namespace="default", label_selector="app=db", grace_period_seconds=0)

    async def remaining() -> list[str]:
        items = (await kube.list("v1/pods", namespace="default", label_selector="app=db"))["items"]
        return [p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")]

    assert await remaining() == []


async def test_binding_subresource_and_status(kube: Client):
    await kube.create("v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    await kube.create("v1/pods", pod("b"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b", "namespace": "default"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    await kube.post_subresource("v1/pods", "b", "binding", binding, namespace="default")
    bound = await kube.get("v1/pods", "b", namespace="default")
    assert bound["spec"]["nodeName"] == "n1"
    bound["status"] = {"phase": "Running"}
    assert (await kube.update_status("v1/pods", bound))["status"]["phase"] == "Running"


async def test_watch_stream(kube: Client):
    start = (await kube.list("v1/pods"))["metadata"]["resourceVersion"]
    await kube.create("v1/pods", pod("w"))
    await kube.patch("v1/pods", "w", {"metadata": {"labels": {"x": "y"}}}, namespace="default")
    seen = []
    async with contextlib.aclosing(kube.watch("v1/pods", resource_version=start, timeout_seconds=5)) as stream:
        async for event_type, obj in stream:
            seen.append((event_type, obj["metadata"]["name"]))
            if len(seen) == 2:
                break
    assert seen == [("ADDED", "w"), ("MODIFIED", "w")]


async def test_wrong_token_is_unauthorized(server: ApiServer):
    client = Client(server.url, token="wrong", ca_file=str(server.ca_path))
    try:
        with pytest.raises(Unauthorized):
            await client.list("v1/pods")
    finally:
        await client.close()


async def test_concurrent_requests_share_the_pool(kube: Client):
    await asyncio.gather(*(kube.create("v1/configmaps", {"metadata": {"name": f"c{i}", "namespace": "default"}})
                           for i in range(50)))
    assert len((await kube.list("v1/configmaps", namespace="default"))["items"]) >= 50


async def test_metadata_only_list_and_watch(kube: Client):
    await kube.create("v1/pods", pod("m", app="x"))
    listed = await kube.list("v1/pods", namespace="default", metadata_only=True)
    [item] = listed["items"]
    assert "spec" not in item and item["metadata"]["labels"] == {"app": "x"}
    start = listed["metadata"]["resourceVersion"]
    await kube.patch("v1/pods", "m", {"metadata": {"labels": {"app": "y"}}}, namespace="default")
    async with contextlib.aclosing(kube.watch("v1/pods", resource_version=start, metadata_only=True,
                                              timeout_seconds=5)) as stream:
        async for event_type, obj in stream:
            assert event_type == "MODIFIED" and obj["kind"] == "PartialObjectMetadata" and "spec" not in obj
            break
