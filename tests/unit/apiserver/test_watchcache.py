"""Per-watcher event filtering: what each watcher sees of one change."""

import pytest

from pinnace.apiserver.watchcache import CachedEvent, Subscriber


def labelled(app: str) -> dict:
    return {"metadata": {"name": "p", "labels": {"app": app}}}


def web_only(obj: dict) -> bool:
    return obj["metadata"]["labels"].get("app") == "web"


@pytest.mark.parametrize(
    "event, seen",
    [
        (CachedEvent("ADDED", 5, "k", labelled("web"), None), "ADDED"),
        (CachedEvent("ADDED", 5, "k", labelled("db"), None), None),
        (CachedEvent("MODIFIED", 5, "k", labelled("web"), labelled("web")), "MODIFIED"),
        (CachedEvent("MODIFIED", 5, "k", labelled("web"), labelled("db")), "ADDED"),  # started matching
        (CachedEvent("MODIFIED", 5, "k", labelled("db"), labelled("web")), "DELETED"),  # stopped matching
        (CachedEvent("MODIFIED", 5, "k", labelled("db"), labelled("db")), None),
        (CachedEvent("DELETED", 5, "k", labelled("web"), labelled("web")), "DELETED"),
        (CachedEvent("DELETED", 5, "k", labelled("db"), labelled("db")), None),
    ],
)
async def test_a_watcher_sees_changes_through_its_selector(event, seen):
    subscriber = Subscriber(after=1, matches=web_only, size=10)
    subscriber.offer(event)
    got = subscriber.queue.get_nowait()[0] if not subscriber.queue.empty() else None
    assert got == seen


async def test_events_at_or_before_the_start_revision_are_skipped():
    subscriber = Subscriber(after=5, matches=lambda obj: True, size=10)
    subscriber.offer(CachedEvent("ADDED", 5, "k", labelled("web"), None))
    subscriber.offer(CachedEvent("ADDED", 6, "k2", labelled("web"), None))
    assert subscriber.queue.qsize() == 1


async def test_a_slow_watcher_is_ended_not_blocking_others():
    subscriber = Subscriber(after=0, matches=lambda obj: True, size=2)
    for revision in range(1, 6):
        subscriber.offer(CachedEvent("ADDED", revision, f"k{revision}", labelled("web"), None))
    assert subscriber.closed
    items = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
    assert items[-1] is None  # the end marker reaches the reader


def test_events_are_encoded_once_per_type():
    event = CachedEvent("ADDED", 3, "k", labelled("web"), None)
    assert event.encoded("ADDED") is event.encoded("ADDED")
    assert event.encoded("ADDED").startswith(b'{"type":"ADDED","object":{"metadata"')


class _StoreEvent:
    """The fields of pinnace.store.base.Event that the cache reads."""

    def __init__(self, revision: int, key: str) -> None:
        self.type, self.revision, self.key = "ADDED", revision, key
        self.value = b'{"metadata": {"name": "p"}}'
        self.prev_value = None


async def test_readers_wait_for_the_events_of_acknowledged_writes():
    import asyncio

    from pinnace.apiserver.watchcache import WatchCache

    cache = WatchCache(store=None, prefix="/registry/pods/")  # type: ignore[arg-type]
    assert await cache.caught_up(timeout=0.01)  # nothing written: nothing to wait for
    cache.note_write(7)
    reader = asyncio.create_task(cache.caught_up(timeout=5))
    await asyncio.sleep(0.01)
    assert not reader.done()
    cache._dispatch(_StoreEvent(6, "/registry/pods/default/a"))
    await asyncio.sleep(0.01)
    assert not reader.done()  # an older event does not satisfy it
    cache._dispatch(_StoreEvent(7, "/registry/pods/default/b"))
    assert await asyncio.wait_for(reader, 1)
    cache.note_write(9)
    assert not await cache.caught_up(timeout=0.01)  # the store watch is behind: callers fall back
