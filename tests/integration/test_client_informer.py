"""Informers against a real API server: convergence across restarts under writes, re-list after
compaction, and many consumers sharing one watch."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pinnace.apiserver.server import ApiServer, ServerConfig
from pinnace.client import ApiError, Client, ConnectionFailed, Informer, InformerFactory


class RestartableServer:
    """An ApiServer that can be stopped and started again on the same data dir and port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.api: ApiServer | None = None

    async def start(self) -> ApiServer:
        self.api = ApiServer(ServerConfig(data_dir=self.data_dir, port=self.port, bind_address="127.0.0.1"))
        await self.api.start()
        self.port = self.api.port
        return self.api

    async def stop(self) -> None:
        if self.api is not None:
            api, self.api = self.api, None
            await api.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RestartableServer]:
    server = RestartableServer(tmp_path / "data")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def new_client(server: RestartableServer) -> Client:
    assert server.api is not None
    client = await Client.from_kubeconfig(server.api.kubeconfig_path, qps=None)
    client.retry_base = 0.05
    return client


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


async def until(condition, timeout: float = 15.0, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class Mirror:
    """Rebuilds the state from handler calls alone, checking per-object order on the way."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}
        self.violations: list[str] = []

    def _rv(self, obj: dict) -> int:
        return int(obj["metadata"]["resourceVersion"])

    def on_add(self, obj: dict) -> None:
        self.objects[obj["metadata"]["name"]] = obj["metadata"]["resourceVersion"]

    def on_update(self, old: dict, new: dict) -> None:
        if self._rv(new) <= self._rv(old):
            self.violations.append(f"{new['metadata']['name']}: {self._rv(old)} -> {self._rv(new)}")
        self.objects[new["metadata"]["name"]] = new["metadata"]["resourceVersion"]

    def on_delete(self, obj: dict) -> None:
        self.objects.pop(obj["metadata"]["name"], None)


async def truth(client: Client) -> dict[str, str]:
    items = (await client.list("v1/pods", namespace="default"))["items"]
    return {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in items}


async def test_cache_converges_while_the_server_restarts_under_writes(server: RestartableServer):
    writer = await new_client(server)
    reader = await new_client(server)
    informer = Informer(reader, "v1/pods", namespace="default")
    informer.backoff_base = 0.05
    mirror = Mirror()
    informer.add_handler(mirror.on_add, mirror.on_update, mirror.on_delete)
    stop_writing = asyncio.Event()
    writes = 0
    errors: dict[str, int] = {}

    async def write_forever(seed: int) -> None:
        nonlocal writes
        rng = random.Random(seed)
        while not stop_writing.is_set():
            name = f"p{rng.randrange(40)}"
            try:
                action = rng.random()
                if action < 0.5:
                    await writer.create("v1/pods", pod(name))
                elif action < 0.85:
                    await writer.patch("v1/pods", name, {"metadata": {"labels": {"n": str(writes)}}},
                                       namespace="default")
                else:
                    await writer.delete("v1/pods", name, namespace="default", grace_period_seconds=0)
                writes += 1
            except (ApiError, ConnectionFailed) as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                await asyncio.sleep(0.01)  # NotFound/AlreadyExists by design; connection errors while down

    await informer.start()
    task = asyncio.gather(*(write_forever(seed) for seed in range(4)))  # writes are fsync-bound: write in parallel
    try:
        await informer.wait_synced(timeout=10)
        for _ in range(3):
            await asyncio.sleep(0.4)
            await server.stop()
            await asyncio.sleep(0.2)
            await server.start()
        await asyncio.sleep(0.4)
        stop_writing.set()
        await task
        assert writes > 30, errors
        expected = await truth(writer)

        def converged() -> bool:
            cached = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.list()}
            return cached == expected and mirror.objects == expected

        await until(converged)
        assert mirror.violations == []
        assert informer.stats.watches >= 4  # it re-watched after each restart...
        assert informer.stats.lists == 1  # ...from where it was, never needing a re-list
    finally:
        stop_writing.set()
        await asyncio.gather(task, return_exceptions=True)
        await informer.stop()
        await writer.close()
        await reader.close()


async def test_relist_after_compaction_emits_the_missed_changes(server: RestartableServer):
    client = await new_client(server)
    for name in ("keep", "change", "remove"):
        await client.create("v1/pods", pod(name))
    informer = Informer(client, "v1/pods", namespace="default")
    informer.backoff_base = 0.05
    mirror = Mirror()
    informer.add_handler(mirror.on_add, mirror.on_update, mirror.on_delete)
    await informer.start()
    try:
        await informer.wait_synced(timeout=10)
        await informer.stop()  # the informer keeps its cache and resourceVersion while stopped
        await client.patch("v1/pods", "change", {"metadata": {"labels": {"v": "2"}}}, namespace="default")
        await client.delete("v1/pods", "remove", namespace="default", grace_period_seconds=0)
        await until(lambda: _gone(client, "remove"))
        await client.create("v1/pods", pod("added"))
        # Compact the history the informer would need, then restart so no watch cache can replay it.
        assert server.api is not None
        store = server.api.store
        await store.compact(await store.current_revision())
        await server.stop()
        await server.start()
        await informer.start()
        expected = await truth(client)
        await until(lambda: mirror.objects == expected and len(informer) == len(expected))
        assert informer.stats.expired >= 1
        assert informer.stats.lists == 2
        assert sorted(expected) == ["added", "change", "keep"]
    finally:
        await informer.stop()
        await client.close()


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get("v1/pods", name, namespace="default")
    except ApiError:
        return True
    return False


async def test_ten_controllers_share_one_informer_and_one_watch(server: RestartableServer):
    client = await new_client(server)
    factory = InformerFactory(client)
    seen: list[list[str]] = [[] for _ in range(10)]
    for mine in seen:
        informer = factory.informer("v1/pods")
        informer.add_handler(on_add=lambda obj, mine=mine: mine.append(obj["metadata"]["name"]))
    try:
        await factory.start()
        await factory.wait_synced(timeout=10)
        await asyncio.gather(*(client.create("v1/pods", pod(f"s{i}")) for i in range(20)))
        await until(lambda: all(len(mine) == 20 for mine in seen))
        assert len(factory.informers) == 1
        assert factory.informers[0].stats.watches == 1
        assert server.api is not None
        assert len(server.api.watchers) == 1  # one watch on the server, whatever the number of consumers
    finally:
        await factory.stop()
        await client.close()


async def test_informer_with_field_selector_and_node_index(server: RestartableServer):
    client = await new_client(server)
    await client.create("v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    factory = InformerFactory(client)
    assigned = factory.informer("v1/pods", field_selector="spec.nodeName=n1")
    everything = factory.informer("v1/pods")
    everything.add_index("node", lambda obj: [obj["spec"].get("nodeName", "")])
    try:
        await factory.start()
        await factory.wait_synced(timeout=10)
        await client.create("v1/pods", pod("x"))
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "x", "namespace": "default"},
                   "target": {"kind": "Node", "name": "n1"}}
        await until(lambda: everything.get("default/x") is not None)
        assert assigned.get("default/x") is None
        await client.post_subresource("v1/pods", "x", "binding", binding, namespace="default")
        await until(lambda: assigned.get("default/x") is not None)
        await until(lambda: [p["metadata"]["name"] for p in everything.by_index("node", "n1")] == ["x"])
    finally:
        await factory.stop()
        await client.close()


async def test_metadata_only_informer(server: RestartableServer):
    client = await new_client(server)
    factory = InformerFactory(client)
    meta = factory.informer("v1/pods", metadata_only=True)
    assert factory.informer("v1/pods") is not meta
    try:
        await client.create("v1/pods", pod("listed"))
        await factory.start()
        await factory.wait_synced(timeout=10)
        await client.create("v1/pods", pod("watched"))
        await until(lambda: meta.get("default/watched") is not None)
        for key in ("default/listed", "default/watched"):
            obj = meta.get(key)
            assert obj["kind"] == "PartialObjectMetadata" and "spec" not in obj
    finally:
        await factory.stop()
        await client.close()
