"""The REST client against a small in-memory API server: paths, scope, errors, retries, watch."""

import asyncio
import contextlib

import pytest

from pinnace.client import AlreadyExists, Client, Conflict, ConnectionFailed, Expired, NotFound, resource_path
from pinnace.client.rest import parse_resource

from .fake_apiserver import FakeApiServer, Injected, free_port


@pytest.mark.parametrize("resource, namespace, name, sub, path", [
    ("v1/pods", None, None, None, "/api/v1/pods"),
    ("v1/pods", "default", None, None, "/api/v1/namespaces/default/pods"),
    ("v1/pods", "ns", "p", "binding", "/api/v1/namespaces/ns/pods/p/binding"),
    ("apps/v1/deployments", "ns", "d", "scale", "/apis/apps/v1/namespaces/ns/deployments/d/scale"),
    ("coordination.k8s.io/v1/leases", "kube-system", "l", None,
     "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"),
    ("v1/nodes", None, "n1", "status", "/api/v1/nodes/n1/status"),
])
def test_resource_paths(resource, namespace, name, sub, path):
    assert resource_path(resource, namespace, name, sub) == path


def test_bad_resource_string():
    with pytest.raises(ValueError):
        parse_resource("pods")


def pod(name, namespace=None, **labels):
    meta = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}


async def test_crud_round_trip(fake_client: Client):
    created = await fake_client.create("v1/pods", pod("a", "default"))
    assert created["metadata"]["namespace"] == "default"
    got = await fake_client.get("v1/pods", "a", namespace="default")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    got["spec"]["nodeName"] = "n1"
    updated = await fake_client.update("v1/pods", got)
    assert updated["spec"]["nodeName"] == "n1"
    patched = await fake_client.patch("v1/pods", "a", {"metadata": {"labels": {"x": "y"}}}, namespace="default")
    assert patched["metadata"]["labels"] == {"x": "y"}
    listed = await fake_client.list("v1/pods", namespace="default")
    assert [p["metadata"]["name"] for p in listed["items"]] == ["a"]
    assert listed["metadata"]["resourceVersion"]
    await fake_client.delete("v1/pods", "a", namespace="default")
    with pytest.raises(NotFound):
        await fake_client.get("v1/pods", "a", namespace="default")


async def test_namespace_defaults_from_object_then_client(fake_api: FakeApiServer, fake_client: Client):
    await fake_client.create("v1/pods", pod("in-obj", "team"))
    await fake_client.create("v1/pods", pod("no-ns"))  # namespaced, none given: the client's default
    assert ("v1/pods", "team", "in-obj") in fake_api.objects
    assert ("v1/pods", "default", "no-ns") in fake_api.objects
    # Cluster-scoped resources never get a namespace, even when one is passed.
    await fake_client.create("v1/nodes", {"metadata": {"name": "n1"}}, namespace="ignored")
    assert ("v1/nodes", None, "n1") in fake_api.objects
    assert (await fake_client.get("v1/nodes", "n1"))["metadata"]["name"] == "n1"


async def test_typed_errors(fake_client: Client):
    await fake_client.create("v1/pods", pod("a", "default"))
    with pytest.raises(AlreadyExists):
        await fake_client.create("v1/pods", pod("a", "default"))
    stale = await fake_client.get("v1/pods", "a", "default")
    await fake_client.patch("v1/pods", "a", {"metadata": {"labels": {"v": "2"}}}, namespace="default")
    with pytest.raises(Conflict) as info:
        await fake_client.update("v1/pods", stale)
    assert info.value.code == 409 and info.value.reason == "Conflict"


async def test_resource_for_kind_via_discovery(fake_client: Client):
    assert await fake_client.resource_for("apps/v1", "Deployment") == "apps/v1/deployments"
    assert await fake_client.resource_for("v1", "Node") == "v1/nodes"
    with pytest.raises(NotFound):
        await fake_client.resource_for("v1", "Nothing")


async def test_retry_after_on_429_retries_even_a_create(fake_api: FakeApiServer, fake_client: Client):
    fake_api.fail_next.append(Injected(429, headers={"Retry-After": "0"}, method="POST"))
    await fake_client.create("v1/pods", pod("a", "default"))
    posts = [r for r in fake_api.requests if r[0] == "POST"]
    assert len(posts) == 2


async def test_503_without_retry_after_retries_get_but_not_post(fake_api: FakeApiServer, fake_client: Client):
    await fake_client.create("v1/pods", pod("a", "default"))
    fake_api.fail_next.append(Injected(503, method="GET"))
    assert (await fake_client.get("v1/pods", "a", "default"))["metadata"]["name"] == "a"
    fake_api.fail_next.append(Injected(503, method="POST"))
    with pytest.raises(Exception) as info:
        await fake_client.create("v1/pods", pod("b", "default"))
    assert info.value.code == 503


async def test_retries_give_up_after_max_retries(fake_api: FakeApiServer, fake_client: Client):
    fake_client.max_retries = 2
    fake_api.fail_next.extend(Injected(429, headers={"Retry-After": "0"}) for _ in range(3))
    with pytest.raises(Exception) as info:
        await fake_client.list("v1/pods")
    assert info.value.code == 429
    assert len(fake_api.requests) == 3


async def test_connection_refused_is_retried_then_raises():
    client = Client(f"http://127.0.0.1:{free_port()}", qps=None, max_retries=2)
    client.retry_base = 0.001
    try:
        with pytest.raises(ConnectionFailed):
            await client.list("v1/pods")
    finally:
        await client.close()


async def test_connection_refused_then_server_comes_up():
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", qps=None, max_retries=8)
    client.retry_base = 0.02
    server = FakeApiServer()
    try:
        request = asyncio.ensure_future(client.list("v1/pods"))
        await asyncio.sleep(0.1)
        await server.start(port)
        assert (await request)["kind"] == "PodList"
    finally:
        await client.close()
        await server.stop()


async def test_qps_limit_paces_requests(fake_api: FakeApiServer):
    client = Client(fake_api.url, qps=50, burst=1)
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        for _ in range(6):
            await client.list("v1/pods")
        assert loop.time() - start >= 0.09  # 5 waits of 20 ms after the one-token burst
    finally:
        await client.close()


async def test_watch_yields_events_and_bookmarks(fake_api: FakeApiServer, fake_client: Client):
    listed = await fake_client.list("v1/pods")
    rv = listed["metadata"]["resourceVersion"]
    seen = []

    async def consume():
        async with contextlib.aclosing(fake_client.watch("v1/pods", resource_version=rv)) as stream:
            async for event_type, obj in stream:
                seen.append((event_type, obj["metadata"].get("name")))
                if event_type == "BOOKMARK":
                    return

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    await fake_client.create("v1/pods", pod("a", "default"))
    await fake_client.delete("v1/pods", "a", "default")
    await asyncio.wait_for(task, 5)
    assert seen[:2] == [("ADDED", "a"), ("DELETED", "a")]
    assert seen[-1][0] == "BOOKMARK"


async def test_watch_from_compacted_revision_raises_expired(fake_api: FakeApiServer, fake_client: Client):
    await fake_client.create("v1/pods", pod("a", "default"))
    fake_api.compact()
    with pytest.raises(Expired):
        async for _ in fake_client.watch("v1/pods", resource_version="1"):
            pass


async def test_apply_patch_sends_field_manager(fake_api: FakeApiServer, fake_client: Client):
    await fake_client.create("v1/pods", pod("a", "default"))
    await fake_client.apply("v1/pods", pod("a", "default", app="x"), force=True)
    assert (await fake_client.get("v1/pods", "a", "default"))["metadata"]["labels"] == {"app": "x"}


async def test_silent_watch_times_out_as_connection_failed(fake_client: Client):
    with pytest.raises(ConnectionFailed):
        async for _ in fake_client.watch("v1/pods", resource_version="1", allow_bookmarks=False, read_timeout=0.3):
            pass


async def test_server_warnings_are_logged_once(fake_api: FakeApiServer, fake_client: Client, caplog):
    for _ in range(2):
        fake_api.fail_next.append(Injected(200, body={"kind": "PodList", "items": []},
                                           headers={"Warning": '299 - "v1 Foo is deprecated"'}))
        await fake_client.list("v1/pods")
    assert caplog.text.count("v1 Foo is deprecated") == 1


async def test_discovery_is_refreshed_for_a_resource_it_did_not_know(fake_client: Client, monkeypatch):
    from . import fake_apiserver

    assert await fake_client.is_namespaced("v1/pods") is True
    assert await fake_client.is_namespaced("v1/widgets") is None
    # A new resource appears (as a CRD would); the next look after the refresh interval finds it.
    monkeypatch.setitem(fake_apiserver.RESOURCES, "v1", {**fake_apiserver.RESOURCES["v1"], "widgets": ("Widget", False)})
    fake_client._refreshed.clear()
    assert await fake_client.is_namespaced("v1/widgets") is False


class ChunkedResponse:
    """Just enough of aiohttp's response for the watch stream parser."""

    def __init__(self, chunks):
        self.content = self
        self.chunks = chunks

    async def iter_any(self):
        for chunk in self.chunks:
            yield chunk


async def test_watch_stream_split_anywhere_and_error_after_events():
    from pinnace.client.rest import _watch_batches

    stream = (b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n'
              b'{"type":"MODIFIED","object":{"metadata":{"name":"a"}}}\n'
              b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"old"}}\n')
    chunks = [stream[i:i + 7] for i in range(0, len(stream), 7)]  # lines cut at arbitrary places
    seen = []
    with pytest.raises(Expired):
        async for batch in _watch_batches(ChunkedResponse(chunks)):
            seen.extend(event_type for event_type, _ in batch)
    assert seen == ["ADDED", "MODIFIED"]  # events before the error are delivered first
    # One chunk holding events and the error: still delivered in order, then raised.
    seen.clear()
    with pytest.raises(Expired):
        async for batch in _watch_batches(ChunkedResponse([stream])):
            seen.extend(event_type for event_type, _ in batch)
    assert seen == ["ADDED", "MODIFIED"]
    # A last line without its newline is still an event.
    batches = [b async for b in _watch_batches(ChunkedResponse([stream.split(b"\n")[0]]))]
    assert [[t for t, _ in b] for b in batches] == [["ADDED"]]
