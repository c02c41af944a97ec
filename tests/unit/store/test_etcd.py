"""etcd backend specifics against real etcd processes: failover, restarts, prefixes, clear errors."""

from __future__ import annotations

import asyncio
import contextlib

import aetcd
import pytest
from tests.fixtures.etcd import EtcdCluster, free_port, requires_etcd

from pinnace.store import Compacted, Event, InvalidKey, StoreError, StoreUnavailable
from pinnace.store.etcd import EtcdStore

pytestmark = requires_etcd


async def test_unreachable_etcd_names_the_problem() -> None:
    port = free_port()
    store = EtcdStore([f"127.0.0.1:{port}"], failover_timeout=0.5, request_timeout=0.5)
    with pytest.raises(
        StoreUnavailable, match=rf"cannot reach etcd at 127.0.0.1:{port}.*check that etcd is running"
    ):
        await store.start()
    await store.close()


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(InvalidKey, match="must start with '/'"):
        EtcdStore(["127.0.0.1:2379"], prefix="pinnace")


async def test_the_prefix_isolates_stores_on_one_etcd(etcd_session: EtcdCluster) -> None:
    async with (
        EtcdStore(etcd_session.endpoints, prefix="/iso-a") as a,
        EtcdStore(etcd_session.endpoints, prefix="/iso-b") as b,
    ):
        await a.create("/registry/x", b"from a")
        assert await b.get("/registry/x") is None
        assert (await b.list("/")).items == []
        host, port = etcd_session.endpoints[0].split(":")
        async with aetcd.Client(host, int(port)) as raw:
            stored = await raw.get(b"/iso-a/registry/x")
            assert stored is not None and stored.value == b"from a"


async def test_a_restarted_etcd_keeps_acknowledged_writes(etcd: EtcdCluster) -> None:
    async with EtcdStore(etcd.endpoints, prefix="/r") as store:
        revision = await store.create("/k", b"v")
        member = etcd.members[0]
        member.kill()
        member.start()
        # The same store handle reconnects by itself.
        kv = await store.get("/k")
        assert kv is not None and (kv.value, kv.mod_revision) == (b"v", revision)
        assert await store.create("/k2", b"v") > revision


async def test_killing_a_member_during_writes_loses_nothing(etcd_cluster: EtcdCluster) -> None:
    store = EtcdStore(etcd_cluster.endpoints, prefix="/ha", request_timeout=2, failover_timeout=20)
    await store.start()
    acknowledged: dict[str, int] = {}
    failed = 0
    start = await store.current_revision()
    seen: list[Event] = []

    async def watcher() -> None:
        async for event in store.watch("/", start):
            seen.append(event)

    async def writer(w: int) -> None:
        nonlocal failed
        for i in range(10_000):
            key = f"/k/{w}/{i}"
            try:
                acknowledged[key] = await store.create(key, key.encode())
            except StoreError:  # unacknowledged: it may or may not have been applied
                failed += 1
            if stop.is_set():
                return

    stop = asyncio.Event()
    watch_task = asyncio.create_task(watcher())
    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        await asyncio.sleep(0.5)
        before_kill = len(acknowledged)
        victim = next(m for m in etcd_cluster.members if m.endpoint == store.endpoint)
        victim.kill()  # the member this store talks to: it must move to another one
        await asyncio.sleep(3)
        after_kill = len(acknowledged)
        stop.set()
        await asyncio.gather(*writers)
        assert before_kill > 0
        assert after_kill > before_kill + 50, "writes did not go on through the other members"
        assert store.endpoint != victim.endpoint
        # Every acknowledged write is readable, through a fresh client on the survivors.
        survivors = [m.endpoint for m in etcd_cluster.members if m is not victim]
        async with EtcdStore(survivors, prefix="/ha") as fresh:
            items = {kv.key: kv.mod_revision for kv in (await fresh.list("/k/")).items}
        missing = {k for k in acknowledged if k not in items}
        assert not missing, f"{len(missing)} acknowledged writes lost"
        assert all(items[k] == r for k, r in acknowledged.items())
        # The watch spanning the failover saw every acknowledged write, in order, once.
        deadline = asyncio.get_running_loop().time() + 10
        while not set(acknowledged) <= {e.key for e in seen} and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        revisions = [e.revision for e in seen]
        assert revisions == sorted(set(revisions))
        assert set(acknowledged) <= {e.key for e in seen}
    finally:
        stop.set()
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        for task in writers:
            task.cancel()
        await store.close()


async def test_requests_fail_clearly_when_every_member_is_gone(etcd: EtcdCluster) -> None:
    store = EtcdStore(etcd.endpoints, prefix="/gone", request_timeout=0.5, failover_timeout=1)
    async with store:
        await store.create("/k", b"v")
        etcd.members[0].kill()
        with pytest.raises(StoreUnavailable, match="cannot reach etcd"):
            await store.get("/k")


async def test_background_compaction_goes_through_etcd(etcd: EtcdCluster) -> None:
    store = EtcdStore(
        etcd.endpoints, prefix="/bg", compact_interval=0.05, compact_keep_seconds=0, compact_keep_revisions=10
    )
    async with store:
        first = await store.create("/k", b"0")
        for i in range(1, 30):
            await store.update("/k", str(i).encode(), None)
        current = await store.current_revision()
        deadline = asyncio.get_running_loop().time() + 5
        while await store.compacted_revision() < current - 10:
            assert asyncio.get_running_loop().time() < deadline, "no background compaction"
            await asyncio.sleep(0.05)
        with pytest.raises(Compacted):
            await store.get("/k", revision=first)
        assert (await store.get("/k")).value == b"29"
    # etcd itself compacted: a plain client sees it too.
    async with EtcdStore(etcd.endpoints, prefix="/bg", compact_interval=0) as other:
        assert await other.compacted_revision() >= current - 10
