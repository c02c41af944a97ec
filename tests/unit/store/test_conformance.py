"""The Store contract, run against every backend (SQLite file, real etcd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pinnace.store import (
    Compacted,
    Event,
    FutureRevision,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    RevisionMismatch,
    Store,
    WatchLagging,
)

TIMEOUT = 10


async def next_event(watch: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(watch), TIMEOUT)


async def take(watch: AsyncIterator[Event], n: int) -> list[Event]:
    return [await next_event(watch) for _ in range(n)]


def summary(events: list[Event]) -> list[tuple[str, str, bytes | None, bytes | None]]:
    return [(e.type, e.key, e.value, e.prev_value) for e in events]


async def test_create_then_get(store: Store) -> None:
    rev = await store.create("/registry/pods/default/a", b'{"a":1}')
    kv = await store.get("/registry/pods/default/a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision) == (
        "/registry/pods/default/a",
        b'{"a":1}',
        rev,
        rev,
    )
    assert await store.current_revision() == rev
    assert await store.get("/registry/pods/default/missing") is None


async def test_create_existing_key_fails(store: Store) -> None:
    await store.create("/k", b"1")
    with pytest.raises(KeyExists):
        await store.create("/k", b"2")
    assert (await store.get("/k")).value == b"1"


async def test_every_write_gets_the_next_revision(store: Store) -> None:
    r1 = await store.create("/a", b"1")
    r2 = await store.update("/a", b"2", r1)
    r3 = (await store.delete("/a", r2)).mod_revision
    r4 = await store.create("/a", b"3")
    assert r1 < r2 < r3 < r4
    assert await store.current_revision() == r4
    kv = await store.get("/a")
    assert kv.create_revision == r4  # a re-created key starts a new life


async def test_update_is_compare_and_swap(store: Store) -> None:
    r1 = await store.create("/k", b"1")
    r2 = await store.update("/k", b"2", r1)
    with pytest.raises(RevisionMismatch) as info:
        await store.update("/k", b"3", r1)
    assert info.value.current is not None and info.value.current.mod_revision == r2
    assert info.value.current.value == b"2"
    r3 = await store.update("/k", b"4", None)  # unconditional
    kv = await store.get("/k")
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"4", r1, r3)


async def test_update_missing_key_fails(store: Store) -> None:
    with pytest.raises(KeyNotFound):
        await store.update("/missing", b"1", None)
    with pytest.raises(KeyNotFound):
        await store.update("/missing", b"1", 5)


async def test_delete_returns_the_deleted_value(store: Store) -> None:
    r1 = await store.create("/k", b"v")
    with pytest.raises(RevisionMismatch):
        await store.delete("/k", r1 + 100)
    kv = await store.delete("/k", r1)
    assert (kv.key, kv.value, kv.create_revision) == ("/k", b"v", r1)
    assert kv.mod_revision == await store.current_revision()
    assert await store.get("/k") is None


async def test_deleting_a_missing_key_fails(store: Store) -> None:
    with pytest.raises(KeyNotFound):
        await store.delete("/missing")
    await store.create("/k", b"v")
    await store.delete("/k")
    with pytest.raises(KeyNotFound):
        await store.delete("/k")


async def test_get_at_an_old_revision(store: Store) -> None:
    r1 = await store.create("/k", b"1")
    r2 = await store.update("/k", b"2", r1)
    await store.delete("/k")
    assert (await store.get("/k", revision=r1)).value == b"1"
    assert (await store.get("/k", revision=r2)).value == b"2"
    assert await store.get("/k") is None


async def test_list_is_by_prefix_in_key_order(store: Store) -> None:
    for key in ["/r/b", "/r/a", "/r/c", "/rx/a", "/q/a"]:
        await store.create(key, key.encode())
    result = await store.list("/r/")
    assert [kv.key for kv in result.items] == ["/r/a", "/r/b", "/r/c"]
    assert result.revision == await store.current_revision()
    assert not result.more
    assert await store.count("/r/") == 3
    assert [kv.key for kv in (await store.list("/r")).items] == ["/r/a", "/r/b", "/r/c", "/rx/a"]


async def test_list_at_a_revision_is_a_snapshot(store: Store) -> None:
    await store.create("/s/a", b"a1")
    rb = await store.create("/s/b", b"b1")
    await store.update("/s/a", b"a2", None)
    await store.delete("/s/b")
    await store.create("/s/c", b"c1")
    then = await store.list("/s/", revision=rb)
    assert [(kv.key, kv.value) for kv in then.items] == [("/s/a", b"a1"), ("/s/b", b"b1")]
    assert then.revision == rb
    now = await store.list("/s/")
    assert [(kv.key, kv.value) for kv in now.items] == [("/s/a", b"a2"), ("/s/c", b"c1")]


async def test_list_at_a_future_revision_fails(store: Store) -> None:
    rev = await store.create("/k", b"v")
    with pytest.raises(FutureRevision):
        await store.list("/", revision=rev + 1000)


async def test_continue_pages_stay_consistent_while_writes_go_on(store: Store) -> None:
    for i in range(10):
        await store.create(f"/p/{i:02}", b"old")
    first = await store.list("/p/", limit=4)
    assert [kv.key for kv in first.items] == ["/p/00", "/p/01", "/p/02", "/p/03"]
    assert first.more and first.remaining == 6
    # Writes between pages must not show up in later pages of the same snapshot.
    await store.delete("/p/05")
    await store.update("/p/06", b"new", None)
    await store.create("/p/055", b"new")
    seen = [kv.key for kv in first.items]
    page = first
    while page.more:
        page = await store.list("/p/", revision=first.revision, limit=4, start_after=page.items[-1].key)
        assert page.revision == first.revision
        assert all(kv.value == b"old" for kv in page.items)
        seen += [kv.key for kv in page.items]
    assert seen == [f"/p/{i:02}" for i in range(10)]
    assert page.remaining == 0


async def test_concurrent_updates_have_exactly_one_winner(store: Store) -> None:
    rev = await store.create("/race", b"0")
    results = await asyncio.gather(
        *(store.update("/race", str(i).encode(), rev) for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, RevisionMismatch) for r in results if not isinstance(r, int))
    assert (await store.get("/race")).mod_revision == winners[0]


async def test_concurrent_creates_have_exactly_one_winner(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create("/once", str(i).encode()) for i in range(20)), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, KeyExists) for r in results) == 19


async def test_concurrent_deletes_have_exactly_one_winner(store: Store) -> None:
    await store.create("/gone", b"v")
    results = await asyncio.gather(*(store.delete("/gone") for _ in range(10)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, KeyNotFound) for r in results) == 9


async def test_watch_replays_from_a_revision(store: Store) -> None:
    start = await store.create("/w/other", b"x")
    r1 = await store.create("/w/a/1", b"v1")
    await store.update("/w/a/1", b"v2", r1)
    await store.create("/w/b", b"not watched")
    await store.delete("/w/a/1")
    watch = store.watch("/w/a/", start)
    try:
        events = await take(watch, 3)
    finally:
        await watch.aclose()
    assert summary(events) == [
        ("ADDED", "/w/a/1", b"v1", None),
        ("MODIFIED", "/w/a/1", b"v2", b"v1"),
        ("DELETED", "/w/a/1", None, b"v2"),
    ]
    assert events[0].revision == r1 and events[0].create_revision == r1
    assert [e.revision for e in events] == sorted(e.revision for e in events)


async def test_watch_delivers_live_events(store: Store) -> None:
    rev = await store.current_revision()
    watch = store.watch("/live/", rev)
    try:
        waiter = asyncio.ensure_future(next_event(watch))
        await asyncio.sleep(0.2)
        r = await store.create("/live/x", b"1")
        event = await waiter
        assert (event.type, event.key, event.revision) == ("ADDED", "/live/x", r)
    finally:
        await watch.aclose()


async def test_watch_switches_from_replay_to_live_without_gap_or_duplicate(store: Store) -> None:
    start = await store.current_revision()
    for i in range(50):
        await store.create(f"/g/{i}", b"v")

    async def writer() -> None:
        for i in range(50, 100):
            await store.create(f"/g/{i}", b"v")

    task = asyncio.create_task(writer())
    watch = store.watch("/g/", start)
    try:
        events = await take(watch, 100)
    finally:
        await watch.aclose()
        await task
    assert [e.key for e in events] == [f"/g/{i}" for i in range(100)]
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))


async def test_watch_from_a_compacted_revision_expires(store: Store) -> None:
    r1 = await store.create("/c/k", b"1")
    r2 = await store.update("/c/k", b"2", r1)
    r3 = await store.update("/c/k", b"3", r2)
    await store.compact(r2)
    assert await store.compacted_revision() >= r2
    with pytest.raises(Compacted):
        await anext(store.watch("/c/", r1))
    with pytest.raises(Compacted):
        await store.list("/c/", revision=r1)
    with pytest.raises(Compacted):
        await store.get("/c/k", revision=r1)
    # The compacted revision itself and everything after it is still readable and watchable.
    assert [kv.value for kv in (await store.list("/c/", revision=r2)).items] == [b"2"]
    watch = store.watch("/c/", r2)
    try:
        event = await next_event(watch)
    finally:
        await watch.aclose()
    assert (event.type, event.revision, event.value, event.prev_value) == ("MODIFIED", r3, b"3", b"2")


async def test_values_of_one_mebibyte(store: Store) -> None:
    value = bytes(range(256)) * 4096
    assert len(value) == 1 << 20
    rev = await store.create("/big", value)
    assert (await store.get("/big")).value == value
    watch = store.watch("/big", rev - 1)
    try:
        assert (await next_event(watch)).value == value
    finally:
        await watch.aclose()


async def test_ten_thousand_keys(store: Store) -> None:
    n = 10_000
    sem = asyncio.Semaphore(64)

    async def put(i: int) -> None:
        async with sem:
            await store.create(f"/many/{i:05}", b'{"i":%d}' % i)

    await asyncio.gather(*(put(i) for i in range(n)))
    assert await store.count("/many/") == n
    everything = await store.list("/many/")
    assert [kv.key for kv in everything.items] == [f"/many/{i:05}" for i in range(n)]
    page = await store.list("/many/", limit=500, start_after="/many/04999")
    assert page.items[0].key == "/many/05000" and page.more and page.remaining == n - 5500


async def test_restart_keeps_every_acknowledged_write(store: Store, make_store: Callable[[], Store]) -> None:
    r1 = await store.create("/keep/a", b"1")
    r2 = await store.update("/keep/a", b"2", r1)
    last = await store.create("/keep/b", b"3")
    await store.close()
    reopened = make_store()
    await reopened.start()
    try:
        assert await reopened.current_revision() >= last
        assert (await reopened.get("/keep/a")).value == b"2"
        assert (await reopened.get("/keep/a", revision=r1)).value == b"1"
        watch = reopened.watch("/keep/", r2)
        try:
            assert (await next_event(watch)).key == "/keep/b"
        finally:
            await watch.aclose()
        assert await reopened.create("/keep/c", b"4") > last
    finally:
        await reopened.close()


async def test_a_slow_watcher_is_cut_off(store: Store) -> None:
    store.watch_queue_size = 20  # type: ignore[attr-defined]
    start = await store.create("/slow/0", b"v")
    watch = store.watch("/slow/", start - 1)
    try:
        assert (await next_event(watch)).key == "/slow/0"  # the watch is now registered
        for i in range(1, 60):
            await store.create(f"/slow/{i}", b"v")
        await asyncio.sleep(0.5)
        with pytest.raises(WatchLagging, match="re-list"):
            for _ in range(60):
                await next_event(watch)
    finally:
        await watch.aclose()


async def test_thousands_of_watchers_all_see_a_write(store: Store) -> None:
    rev = await store.current_revision()
    watches = [store.watch("/many-watchers/", rev) for _ in range(2000)]
    try:
        waiters = [asyncio.ensure_future(anext(w)) for w in watches]
        await asyncio.sleep(0.5)
        written = await store.create("/many-watchers/x", b"v")
        events = await asyncio.wait_for(asyncio.gather(*waiters), 30)
        assert {e.revision for e in events} == {written}
    finally:
        for w in watches:
            await w.aclose()


@pytest.mark.parametrize("key", ["registry/pods/x", "", "pods"])
async def test_keys_outside_the_key_space_are_refused(store: Store, key: str) -> None:
    with pytest.raises(InvalidKey, match="outside the store's key space"):
        await store.create(key, b"v")


async def test_values_must_be_bytes(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.create("/k", "not bytes")  # type: ignore[arg-type]
    assert await store.get("/k") is None


async def test_watchers_from_different_revisions_each_get_their_own_history(store: Store) -> None:
    r1 = await store.create("/m/a", b"1")
    r2 = await store.create("/m/b", b"2")
    recent = store.watch("/m/", r2)
    old = store.watch("/m/", r1 - 1)
    joined = store.watch("/m/", r2)
    try:
        first = asyncio.ensure_future(next_event(recent))
        await asyncio.sleep(0.2)
        r3 = await store.create("/m/c", b"3")
        assert (await first).revision == r3
        assert [e.revision for e in await take(old, 3)] == [r1, r2, r3]  # starts before the live watch
        assert [e.revision for e in await take(joined, 1)] == [r3]  # joins the live watch
        r4 = await store.create("/m/d", b"4")
        for watch in (recent, old, joined):
            assert (await next_event(watch)).revision == r4
    finally:
        for watch in (recent, old, joined):
            await watch.aclose()
