"""Informers against the in-memory API server: sync, handlers, indexes, re-list and reconnects."""

import asyncio

import pytest

from pinnace.client import Client, Informer, InformerFactory, field_index, label_index, owner_index

from .fake_apiserver import FakeApiServer


def pod(name, namespace="default", node="", labels=None, owner=None):
    meta = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "kind": "ReplicaSet", "name": "rs", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node}}


async def until(condition, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Recorder:
    def __init__(self):
        self.events = []

    def add(self, obj):
        self.events.append(("add", obj["metadata"]["name"]))

    def update(self, old, new):
        self.events.append(("update", new["metadata"]["name"]))

    def delete(self, obj):
        self.events.append(("delete", obj["metadata"]["name"]))

    def handlers(self):
        return {"on_add": self.add, "on_update": self.update, "on_delete": self.delete}


@pytest.fixture
async def factory(fake_client: Client):
    factory = InformerFactory(fake_client)
    yield factory
    await factory.stop()


async def test_sync_lists_in_pages_then_watches(fake_api: FakeApiServer, fake_client: Client, factory):
    for i in range(7):
        await fake_client.create("v1/pods", pod(f"p{i}"))
    pods = factory.informer("v1/pods")
    pods.page_size = 3
    seen = Recorder()
    pods.add_handler(**seen.handlers())
    await factory.start()
    await factory.wait_synced(timeout=5)
    assert len(pods) == 7
    assert sum(1 for m, p in fake_api.requests if m == "GET" and p == "/api/v1/pods") >= 3  # 3 pages
    assert pods.get("default/p3")["kind"] == "Pod"  # list items get kind/apiVersion back
    await fake_client.create("v1/pods", pod("new"))
    await fake_client.patch("v1/pods", "p0", {"spec": {"nodeName": "n1"}}, namespace="default")
    await fake_client.delete("v1/pods", "p1", namespace="default")
    await until(lambda: ("delete", "p1") in seen.events)
    assert seen.events[7:] == [("add", "new"), ("update", "p0"), ("delete", "p1")]
    assert pods.get("default/p0")["spec"]["nodeName"] == "n1"
    assert pods.get("default/p1") is None


async def test_indexes(fake_client: Client, factory):
    pods = factory.informer("v1/pods")
    pods.add_index("node", field_index("spec.nodeName"))
    pods.add_index("app", label_index("app"))
    pods.add_index("owner", owner_index)
    await fake_client.create("v1/pods", pod("a", node="n1", labels={"app": "web"}, owner="u1"))
    await fake_client.create("v1/pods", pod("b", namespace="other", node="n1"))
    await fake_client.create("v1/pods", pod("c", node="n2", labels={"app": "web"}, owner="u1"))
    await factory.start()
    await factory.wait_synced(5)
    assert sorted(p["metadata"]["name"] for p in pods.by_index("node", "n1")) == ["a", "b"]
    assert pods.index_keys("app", "web") == ["default/a", "default/c"]
    assert pods.index_keys("owner", "u1") == ["default/a", "default/c"]
    assert [p["metadata"]["name"] for p in pods.list(namespace="other")] == ["b"]
    assert sorted(p["metadata"]["name"] for p in pods.list(labels={"app": "web"})) == ["a", "c"]
    # Moving a pod moves it between index values.
    await fake_client.patch("v1/pods", "a", {"spec": {"nodeName": "n2"}}, namespace="default")
    await until(lambda: pods.index_keys("node", "n2") == ["default/a", "default/c"])
    assert pods.index_keys("node", "n1") == ["other/b"]
    # An index added later covers what is cached already.
    pods.add_index("ns-node", lambda o: [f"{o['metadata']['namespace']}:{o['spec']['nodeName']}"])
    assert pods.index_keys("ns-node", "other:n1") == ["other/b"]


async def test_factory_shares_one_informer_and_one_watch(fake_api: FakeApiServer, fake_client: Client, factory):
    recorders = [Recorder() for _ in range(10)]
    informers = [factory.informer("v1/pods") for _ in recorders]
    assert all(i is informers[0] for i in informers)
    assert factory.informer("v1/pods", label_selector="app=x") is not informers[0]
    for informer, recorder in zip(informers, recorders, strict=True):
        informer.add_handler(**recorder.handlers())
    await factory.start()
    await factory.wait_synced(5)
    await fake_client.create("v1/pods", pod("a"))
    await until(lambda: all(r.events == [("add", "a")] for r in recorders))
    assert informers[0].stats.watches == 1


async def test_handler_added_after_sync_gets_the_cache_as_adds(fake_client: Client, factory):
    await fake_client.create("v1/pods", pod("a"))
    pods = factory.informer("v1/pods")
    await factory.start()
    await factory.wait_synced(5)
    late = Recorder()
    pods.add_handler(**late.handlers())
    assert late.events == [("add", "a")]


async def test_handler_errors_are_logged_and_do_not_stop_the_informer(fake_client: Client, factory, caplog):
    pods = factory.informer("v1/pods")
    good = Recorder()

    def broken(obj):
        raise RuntimeError("handler bug")

    pods.add_handler(on_add=broken)
    pods.add_handler(**good.handlers())
    await factory.start()
    await factory.wait_synced(5)
    await fake_client.create("v1/pods", pod("a"))
    await fake_client.create("v1/pods", pod("b"))
    await until(lambda: len(good.events) == 2)
    assert pods.stats.handler_errors == 2
    assert "handler bug" in caplog.text


async def test_async_handlers_are_awaited_in_order(fake_client: Client, factory):
    pods = factory.informer("v1/pods")
    order = []

    async def on_add(obj):
        await asyncio.sleep(0.01)
        order.append(obj["metadata"]["name"])

    pods.add_handler(on_add=on_add)
    await factory.start()
    await factory.wait_synced(5)
    for name in "abc":
        await fake_client.create("v1/pods", pod(name))
    await until(lambda: len(order) == 3)
    assert order == ["a", "b", "c"]


async def test_filtered_handler_sees_objects_enter_and_leave(fake_client: Client, factory):
    pods = factory.informer("v1/pods")
    unassigned = Recorder()
    pods.add_handler(**unassigned.handlers(), filter=lambda p: not p["spec"].get("nodeName"))
    await factory.start()
    await factory.wait_synced(5)
    await fake_client.create("v1/pods", pod("a"))
    await fake_client.patch("v1/pods", "a", {"metadata": {"labels": {"x": "1"}}}, namespace="default")
    await fake_client.patch("v1/pods", "a", {"spec": {"nodeName": "n1"}}, namespace="default")
    await fake_client.patch("v1/pods", "a", {"metadata": {"labels": {"x": "2"}}}, namespace="default")
    await until(lambda: pods.get("default/a")["metadata"]["labels"] == {"x": "2"})
    assert unassigned.events == [("add", "a"), ("update", "a"), ("delete", "a")]


async def test_relist_after_expiry_emits_the_difference(fake_api: FakeApiServer, fake_client: Client):
    for name in "abc":
        await fake_client.create("v1/pods", pod(name))
    pods = Informer(fake_client, "v1/pods")
    seen = Recorder()
    pods.add_handler(**seen.handlers())
    await pods.start()
    try:
        await pods.wait_synced(5)
        await until(lambda: fake_api.watches_open == 1)
        # While the informer is cut off, objects change and history is compacted.
        await fake_api.stop()
        fake_api.objects.pop(("v1/pods", "default", "a"))
        await fake_api.write("MODIFIED", "v1/pods", pod("b", node="n9"))
        await fake_api.write("ADDED", "v1/pods", pod("d"))
        fake_api.compact()
        seen.events.clear()
        await fake_api.start(fake_api.port)
        await until(lambda: len(seen.events) == 3, timeout=10)
        assert sorted(seen.events) == [("add", "d"), ("delete", "a"), ("update", "b")]
        assert pods.stats.expired == 1
        assert sorted(pods.keys()) == ["default/b", "default/c", "default/d"]
    finally:
        await pods.stop()


async def test_rewatch_from_last_resource_version_after_restart_loses_nothing(fake_api: FakeApiServer,
                                                                          fake_client: Client):
    pods = Informer(fake_client, "v1/pods")
    seen = Recorder()
    pods.add_handler(**seen.handlers())
    await pods.start()
    try:
        await pods.wait_synced(5)
        await until(lambda: fake_api.watches_open == 1)
        await fake_api.stop()
        await fake_api.write("ADDED", "v1/pods", pod("while-down"))
        await fake_api.start(fake_api.port)
        await until(lambda: seen.events == [("add", "while-down")], timeout=10)
        assert pods.stats.lists == 1  # no re-list: the watch resumed from its resourceVersion
        assert pods.stats.watches >= 2
    finally:
        await pods.stop()


async def test_stale_events_never_move_an_object_back_in_time(fake_client: Client):
    pods = Informer(fake_client, "v1/pods")
    pending = []
    newer = pod("a")
    newer["metadata"]["resourceVersion"] = "10"
    older = pod("a", node="old")
    older["metadata"]["resourceVersion"] = "9"
    pods._upsert(newer, pending)
    pods._upsert(older, pending)
    assert pods.get("default/a")["spec"]["nodeName"] == ""


async def test_bookmarks_advance_the_resource_version(fake_api: FakeApiServer, fake_client: Client):
    pods = Informer(fake_client, "v1/pods")
    await pods.start()
    try:
        await pods.wait_synced(5)
        await fake_client.create("v1/configmaps", {"metadata": {"name": "c", "namespace": "default"}})
        await until(lambda: pods.stats.bookmarks > 0 and pods.resource_version == str(fake_api.revision))
    finally:
        await pods.stop()


async def test_periodic_resync_redelivers_cached_objects(fake_client: Client):
    await fake_client.create("v1/pods", pod("a"))
    pods = Informer(fake_client, "v1/pods", resync_period=0.05)
    seen = Recorder()
    pods.add_handler(**seen.handlers())
    await pods.start()
    try:
        await until(lambda: seen.events.count(("update", "a")) >= 2)
    finally:
        await pods.stop()


async def test_expired_continue_token_falls_back_to_one_full_list(fake_api: FakeApiServer, fake_client: Client):
    from .fake_apiserver import Injected

    for i in range(5):
        await fake_client.create("v1/pods", pod(f"p{i}"))
    pods = Informer(fake_client, "v1/pods")
    pods.page_size = 2
    expired = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
               "message": "continue token too old"}
    first_page = asyncio.Event()
    original = fake_api.list

    def list_then_expire(request, *args):
        response = original(request, *args)
        if not first_page.is_set():
            first_page.set()
            fake_api.fail_next.append(Injected(410, body=expired, method="GET"))
        return response

    fake_api.list = list_then_expire
    await pods.start()
    try:
        await pods.wait_synced(5)
        assert len(pods) == 5
    finally:
        await pods.stop()


async def test_informer_requested_after_factory_start_starts_at_once(fake_client: Client, factory):
    await factory.start()
    await fake_client.create("v1/pods", pod("late"))
    pods = factory.informer("v1/pods")
    await factory.wait_synced(5)
    assert pods.running and pods.get("default/late") is not None


async def test_broken_filter_index_and_transform_do_not_stop_the_informer(fake_client: Client, factory):
    def broken(obj):
        raise ZeroDivisionError("user bug")

    pods = factory.informer("v1/pods", transform=broken)
    pods.add_index("broken", broken)
    good = Recorder()
    pods.add_handler(on_add=lambda obj: None, filter=broken)
    pods.add_handler(**good.handlers())
    await factory.start()
    await factory.wait_synced(5)
    await fake_client.create("v1/pods", pod("a"))
    await fake_client.create("v1/pods", pod("b"))
    await until(lambda: good.events == [("add", "a"), ("add", "b")])
    assert pods.running
    assert pods.index_values("broken") == []
