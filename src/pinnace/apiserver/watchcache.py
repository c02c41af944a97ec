"""One store watch per resource, fanned out to every HTTP watcher of that resource.

A `WatchCache` follows `/registry/<resource>/` from the store, decodes each change once, keeps the
last `window` events for replay, and hands each event to the watchers subscribed to it. So 1,000
`kubectl get -w` cost one store watch and one JSON decode per change, not 1,000.

The consistency contract, as in kube-apiserver's watch cache:
- a subscriber at revision R sees every change with revision > R exactly once, in order: the buffered
  ones replayed first, then live ones, with nothing lost between (subscription is synchronous);
- a revision older than the window is served by a direct store watch (`fallback`), which raises
  `Compacted` for a revision the store no longer keeps (410 Expired upstream);
- a watcher that cannot keep up (its queue is full) is ended; the client re-watches, as client-go does
  when a watch closes. If the cache's own store watch fails, every subscriber is ended the same way
  and the cache starts again from the store's current revision.

Selector filtering happens per watcher on the decoded objects: an object that stops matching a
watcher's selector reaches that watcher as DELETED, one that starts matching as ADDED.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from pinnace.store.base import Store, StoreError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CachedEvent:
    type: str  # ADDED, MODIFIED, DELETED
    revision: int
    key: str
    object: dict  # resourceVersion set to `revision`
    prev: dict | None
    _encoded: dict | None = None

    def encoded(self, event_type: str) -> bytes:
        """`{"type":...,"object":...}\\n`, serialized once per event and type for all watchers."""
        if self._encoded is None:
            self._encoded = {}
        line = self._encoded.get(event_type)
        if line is None:
            line = orjson.dumps({"type": event_type, "object": self.object}) + b"\n"
            self._encoded[event_type] = line
        return line


def decode(value: bytes, revision: int) -> dict:
    obj = orjson.loads(value)
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


class Subscriber:
    """One watcher's queue. `None` in the queue means: the stream is over, close it."""

    __slots__ = ("after", "closed", "matches", "queue")

    def __init__(self, after: int, matches: Callable[[dict], bool], size: int) -> None:
        self.after = after
        self.matches = matches
        self.queue: asyncio.Queue[tuple[str, CachedEvent] | None] = asyncio.Queue(maxsize=size)
        self.closed = False

    def offer(self, event: CachedEvent) -> None:
        if self.closed or event.revision <= self.after:
            return
        new_match = event.type != "DELETED" and self.matches(event.object)
        old_match = event.prev is not None and self.matches(event.prev)
        if event.type == "DELETED":
            kind = "DELETED" if old_match else None
        elif new_match:
            kind = "MODIFIED" if old_match and event.type != "ADDED" else "ADDED"
        else:
            kind = "DELETED" if old_match else None
        self.after = event.revision
        if kind is None:
            return
        try:
            self.queue.put_nowait((kind, event))
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Make room for the end marker so the reader wakes up even when the queue is full. The newest
        # events go, never the oldest: the watcher must see a gap-free prefix of the stream, because it
        # resumes from the last resourceVersion it received.
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue._queue.pop()  # type: ignore[attr-defined]  # asyncio.Queue keeps a deque


class WatchCache:
    def __init__(self, store: Store, prefix: str, window: int = 2000, queue_size: int = 2000) -> None:
        self.store = store
        self.prefix = prefix
        self.window = window
        self.queue_size = queue_size
        self.events: collections.deque[CachedEvent] = collections.deque(maxlen=window)
        self.subscribers: set[Subscriber] = set()
        self.start_revision = 0  # events after this revision are (or were) in the buffer
        self.revision = 0  # the newest revision seen
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()
        self._listeners: list[Callable[[CachedEvent], None]] = []
        self._restart_callbacks: list[Callable[[], None]] = []
        self.objects: dict[str, dict] | None = None  # filled on first use of current_objects()
        self._pending: list[CachedEvent] | None = None
        self._filling: asyncio.Future[None] | None = None
        self.written = 0  # the newest write under the prefix this server acknowledged (note_write)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def start(self) -> None:
        """Begin following the store (once, however many callers race here) and wait until it does."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._begin())
        await asyncio.shield(self._starting)
        await self._ready.wait()

    async def _begin(self) -> None:
        self.start_revision = self.revision = await self.store.current_revision()
        self._task = asyncio.create_task(self._run(), name=f"watchcache {self.prefix}")

    def add_listener(self, listener: Callable[[CachedEvent], None], on_restart: Callable[[], None] | None = None) -> None:
        """`listener` is called with every event (the server keeps its namespace table this way);
        `on_restart` when events may have been missed and the listener's state must be rebuilt."""
        self._listeners.append(listener)
        if on_restart is not None:
            self._restart_callbacks.append(on_restart)

    async def _run(self) -> None:
        while True:
            try:
                stream = self.store.watch(self.prefix, self.start_revision)
                self._ready.set()
                async for event in stream:
                    self._dispatch(event)
            except asyncio.CancelledError:
                raise
            except StoreError as error:
                log.warning("watch cache for %s restarts: %s", self.prefix, error)
            # The store watch ended or failed: end every subscriber (they re-watch) and start over.
            for subscriber in list(self.subscribers):
                subscriber.end()
            self.subscribers.clear()
            self.events.clear()
            for callback in self._restart_callbacks:
                callback()
            self.objects, self._pending, self._filling = None, None, None  # refilled on next use
            await asyncio.sleep(0.1)
            try:
                self.start_revision = self.revision = await self.store.current_revision()
            except StoreError as error:
                log.warning("watch cache for %s cannot read the store: %s", self.prefix, error)

    def _dispatch(self, event) -> None:  # event: pinnace.store.base.Event
        if event.type == "DELETED":
            prev = decode(event.prev_value, event.revision) if event.prev_value else None
            obj = prev if prev is not None else {"metadata": {"resourceVersion": str(event.revision)}}
        else:
            obj = decode(event.value, event.revision)
            prev = orjson.loads(event.prev_value) if event.prev_value else None
        cached = CachedEvent(event.type, event.revision, event.key, obj, prev)
        if len(self.events) == self.window:
            self.start_revision = self.events[0].revision
        self.events.append(cached)
        self.revision = event.revision
        if self._waiters:
            self._wake()
        for subscriber in tuple(self.subscribers):
            subscriber.offer(cached)
            if subscriber.closed:
                self.subscribers.discard(subscriber)
        for listener in self._listeners:
            listener(cached)
        if self.objects is not None:
            self._track(cached)

    # ---- catching up with this server's own writes ----

    def note_write(self, revision: int) -> None:
        """This server acknowledged a write under the prefix at `revision` (before its event arrives)."""
        if revision > self.written:
            self.written = revision

    def _wake(self) -> None:
        still = []
        for revision, waiter in self._waiters:
            if revision <= self.revision:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((revision, waiter))
        self._waiters = still

    async def caught_up(self, timeout: float = 1.0) -> bool:
        """Wait until every write this server acknowledged under the prefix has been dispatched (read
        your writes). False when that did not happen within `timeout` (the store watch is restarting)."""
        target = self.written
        if self.revision >= target:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return self.revision >= target
        return True

    # ---- the current objects (for readers that tolerate a few milliseconds of lag) ----

    def _track(self, event: CachedEvent) -> None:
        if self._pending is not None:
            self._pending.append(event)  # the initial fill is still reading
        elif event.type == "DELETED":
            self.objects.pop(event.key, None)  # type: ignore[union-attr]
        else:
            self.objects[event.key] = event.object  # type: ignore[index]

    async def current_objects(self) -> dict[str, dict]:
        """key -> object for every object under the prefix, kept current from the watch.

        Like an informer's store: as fresh as the last event dispatched, shared (never mutate the
        objects). The first call fills it from the store at the revision the cache has reached.
        """
        await self.start()
        if self._filling is None:
            self._filling = asyncio.ensure_future(self._fill())
        await asyncio.shield(self._filling)
        return self.objects  # type: ignore[return-value]

    async def _fill(self) -> None:
        self.objects, self._pending = {}, []
        revision = self.revision
        try:
            result = await self.store.list(self.prefix, revision=revision)
            while True:
                for kv in result.items:
                    self.objects[kv.key] = decode(kv.value, kv.mod_revision)
                if not result.more or not result.items:
                    break
                result = await self.store.list(self.prefix, revision=revision, start_after=result.items[-1].key)
        except BaseException:
            self.objects, self._pending, self._filling = None, None, None  # the next caller tries again
            raise
        pending, self._pending = self._pending, None
        for event in pending:
            if event.revision > revision:
                self._track(event)

    def can_serve(self, after: int) -> bool:
        return after >= self.start_revision

    def subscribe(self, after: int, matches: Callable[[dict], bool]) -> Subscriber:
        """Events with revision > `after` (the caller checked `can_serve(after)`)."""
        subscriber = Subscriber(after, matches, self.queue_size)
        for event in self.events:
            if event.revision > after:
                subscriber.offer(event)
        if not subscriber.closed:
            self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def stop(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.end()
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, StoreError):
                pass
            self._task = None
