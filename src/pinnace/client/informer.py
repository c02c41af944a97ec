"""Informers: a local, indexed cache of one resource, kept current by list-then-watch, with event handlers.

The contract (client-go's SharedInformer, restated for pinnace):
- The cache is eventually consistent with the server. For each object, the sequence of states the cache
  holds is a subsequence of the states the object had on the server, in order: an event whose
  resourceVersion is older than the cached one is dropped, so an object never goes back in time. States
  may be skipped (only the latest matters to a level-triggered controller).
- The informer lists (in pages), then watches from the list's resourceVersion, asking for bookmarks so
  that a quiet watch still advances its resourceVersion. When the stream ends or breaks, it watches again
  from the last resourceVersion it saw, so no event is lost across an API server restart. When the server
  answers 410 Expired (history compacted), it lists again and turns the difference between the cache and
  the new list into the add / update / delete notifications the lost events would have produced.
- Handlers are plain callables, called on the event loop in event order, after the cache was updated:
  `on_add(obj)`, `on_update(old, new)`, `on_delete(obj)`. A delete carries the object's final state (from
  the DELETED event, or the last cached state when the delete was learned by re-listing). A handler added
  after the informer synced first receives `on_add` for everything already cached. Handlers must be quick
  (typically: enqueue a key); an exception in one is logged and never stops the informer. A handler that
  returns an awaitable is awaited before the next event is processed.
- With `resync_period`, every cached object is periodically re-delivered as `on_update(obj, obj)`.
- Objects in the cache are shared with every handler and controller: never mutate them; copy first.

`InformerFactory` hands out one informer per (resource, namespace, selectors), so N controllers that watch
pods share one list, one watch and one cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pinnace.client.errors import ApiError, Expired
from pinnace.client.ratelimit import jittered_backoff
from pinnace.client.rest import Client, ConnectionFailed, parse_resource

log = logging.getLogger("pinnace.client.informer")

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]

NAMESPACE_INDEX = "namespace"


def meta_namespace_key(obj: Mapping[str, Any]) -> str:
    """`"<namespace>/<name>"`, or `"<name>"` for cluster-scoped objects (client-go's MetaNamespaceKeyFunc)."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def split_key(key: str) -> tuple[str | None, str]:
    """Inverse of meta_namespace_key: `"ns/name"` -> ("ns", "name"); `"name"` -> (None, "name")."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, key)


def namespace_index(obj: Obj) -> list[str]:
    return [obj["metadata"].get("namespace") or ""]


def field_index(path: str) -> IndexFunc:
    """An index on a dotted field path: `field_index("spec.nodeName")`. Missing fields index as ""."""
    parts = path.split(".")

    def index(obj: Obj) -> list[str]:
        value: Any = obj
        for part in parts:
            if not isinstance(value, Mapping):
                return [""]
            value = value.get(part)
        return ["" if value is None else str(value)]

    return index


def label_index(label: str) -> IndexFunc:
    """An index on one label's value (objects without the label are not indexed)."""

    def index(obj: Obj) -> list[str]:
        labels = obj["metadata"].get("labels") or {}
        return [labels[label]] if label in labels else []

    return index


def owner_index(obj: Obj) -> list[str]:
    """An index on owner UIDs (`metadata.ownerReferences[].uid`)."""
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or () if "uid" in ref]


def controller_owner_index(obj: Obj) -> list[str]:
    """An index on the UID of the controlling owner only (`controller: true`)."""
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or () if ref.get("controller") and "uid" in ref]


def _rv(obj: Mapping[str, Any]) -> int | None:
    # pinnace resourceVersions are decimal revisions; anything else is treated as incomparable.
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass
class _Handler:
    on_add: Callable[[Obj], Any] | None
    on_update: Callable[[Obj, Obj], Any] | None
    on_delete: Callable[[Obj], Any] | None
    filter: Callable[[Obj], bool] | None = None


@dataclass
class InformerStats:
    lists: int = 0  # full (re-)lists performed
    watches: int = 0  # watch connections opened
    events: int = 0  # watch events applied (bookmarks excluded)
    bookmarks: int = 0
    expired: int = 0  # 410 answers that forced a re-list
    reconnects: int = 0  # watches re-opened after a break or an error
    handler_errors: int = 0


class Informer:
    """One resource's list-watch cache. Obtain through `InformerFactory.informer(...)` to share it."""

    def __init__(
        self,
        client: Client,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        resync_period: float | None = None,
        page_size: int = 500,
        transform: Callable[[Obj], Obj] | None = None,
        metadata_only: bool = False,
    ) -> None:
        group, version, _ = parse_resource(resource)
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.transform = transform
        # Cache PartialObjectMetadata (kind, apiVersion, metadata) only: for controllers that need no spec,
        # such as garbage collection across every resource.
        self.metadata_only = metadata_only
        self.api_version = f"{group}/{version}" if group else version
        self.stats = InformerStats()
        self.resource_version: str | None = None  # last resourceVersion seen (list, event or bookmark)
        self.last_sync_resource_version: str | None = None  # resourceVersion of the last full list
        self.backoff_base = 0.1
        self.backoff_cap = 5.0
        self.watch_timeout = (300, 600)  # seconds; randomised so a fleet of informers does not reconnect in step
        # A watch silent this long is presumed dead (the server sends a bookmark every minute or so) and is
        # re-opened from the last resourceVersion, which costs nothing if it was merely quiet.
        self.watch_read_timeout: float | None = 180.0
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index}
        self._indices: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}
        self._handlers: list[_Handler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._kind: str | None = None
        self._last_error: str | None = None
        self._background: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        selectors = ",".join(s for s in (self.label_selector, self.field_selector) if s)
        return f"<Informer {self.resource} ns={self.namespace or '*'} {selectors} items={len(self._items)}>"

    # -- reading the cache ----------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        """The cached object with key `"namespace/name"` (or `"name"`), or None."""
        return self._items.get(key)

    def get_by_name(self, name: str, namespace: str | None = None) -> Obj | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> list[Obj]:
        """Cached objects, optionally only one namespace's and only those carrying all `labels`."""
        if namespace is None:
            objects: Iterable[Obj] = self._items.values()
        else:
            objects = self.by_index(NAMESPACE_INDEX, namespace)
        if labels:
            objects = [o for o in objects if _has_labels(o, labels)]
        return list(objects)

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [self._items[k] for k in self._indices[index].get(value, ())]

    def index_keys(self, index: str, value: str) -> list[str]:
        return sorted(self._indices[index].get(value, ()))

    def index_values(self, index: str) -> list[str]:
        return [v for v, keys in self._indices[index].items() if keys]

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Add an index; objects already cached are indexed at once. Adding the same name again replaces it."""
        self._indexers[name] = func
        index: dict[str, set[str]] = {}
        for key, obj in self._items.items():
            for value in self._index_values(func, obj):
                index.setdefault(value, set()).add(key)
        self._indices[name] = index

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the first full list is in the cache (and its add handlers have run)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    # -- handlers -------------------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: Callable[[Obj], Any] | None = None,
        on_update: Callable[[Obj, Obj], Any] | None = None,
        on_delete: Callable[[Obj], Any] | None = None,
        *,
        filter: Callable[[Obj], bool] | None = None,
    ) -> object:
        """Register handlers; returns a handle for remove_handler().

        With `filter`, the handler sees only objects passing it: an update that makes an object pass is an
        add, one that makes it stop passing is a delete (client-go's FilteringResourceEventHandler).
        """
        handler = _Handler(on_add, on_update, on_delete, filter)
        self._handlers.append(handler)
        if self._items and on_add is not None:
            for obj in list(self._items.values()):
                if filter is None or self._passes(handler, obj):
                    self._call(on_add, obj, background=True)
        return handler

    def remove_handler(self, handle: object) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handle)  # type: ignore[arg-type]

    def _call(self, func: Callable[..., Any], *args: Obj, background: bool = False) -> Awaitable[Any] | None:
        try:
            result = func(*args)
        except Exception:  # a handler's bug must not stop the informer; log it with context and go on
            self.stats.handler_errors += 1
            log.exception("%s: event handler %r failed", self.resource, func)
            return None
        if result is not None and inspect.isawaitable(result):
            if background:
                task = asyncio.ensure_future(self._await_handler(result))
                self._background.add(task)  # keep a reference until done, or the task may be collected
                task.add_done_callback(self._background.discard)
                return None
            return self._await_handler(result)
        return None

    def _passes(self, handler: _Handler, obj: Obj) -> bool:
        assert handler.filter is not None
        try:
            return bool(handler.filter(obj))
        except Exception:  # user code, like a handler: a bug is logged, the object treated as not passing
            self.stats.handler_errors += 1
            log.exception("%s: handler filter %r failed on %s", self.resource, handler.filter, obj.get("metadata"))
            return False

    async def _await_handler(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            self.stats.handler_errors += 1
            log.exception("%s: async event handler failed", self.resource)

    def _notify_add(self, obj: Obj, pending: list[Awaitable[Any]]) -> None:
        for h in self._handlers:
            if h.on_add is not None and (h.filter is None or self._passes(h, obj)):
                result = self._call(h.on_add, obj)
                if result is not None:
                    pending.append(result)

    def _notify_update(self, old: Obj, new: Obj, pending: list[Awaitable[Any]]) -> None:
        for h in self._handlers:
            result = None
            if h.filter is None:
                if h.on_update is not None:
                    result = self._call(h.on_update, old, new)
            else:
                was, now = self._passes(h, old), self._passes(h, new)
                if was and now:
                    if h.on_update is not None:
                        result = self._call(h.on_update, old, new)
                elif now:
                    if h.on_add is not None:
                        result = self._call(h.on_add, new)
                elif was and h.on_delete is not None:
                    result = self._call(h.on_delete, old)
            if result is not None:
                pending.append(result)

    def _notify_delete(self, obj: Obj, pending: list[Awaitable[Any]]) -> None:
        for h in self._handlers:
            if h.on_delete is not None and (h.filter is None or self._passes(h, obj)):
                result = self._call(h.on_delete, obj)
                if result is not None:
                    pending.append(result)

    # -- the cache ------------------------------------------------------------------------------------

    def _index_values(self, func: IndexFunc, obj: Obj) -> Iterable[str]:
        try:
            return func(obj)
        except Exception:  # user code, like a handler: log it and leave the object out of this index
            log.exception("%s: index function %r failed on %s", self.resource, func, meta_namespace_key(obj))
            return ()

    def _reindex(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for name, func in self._indexers.items():
            old_values = self._index_values(func, old) if old is not None else ()
            new_values = self._index_values(func, new) if new is not None else ()
            if old_values and old_values == new_values:
                continue
            index = self._indices[name]
            for value in old_values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in new_values:
                keys = index.get(value)
                if keys is None:
                    index[value] = {key}
                else:
                    keys.add(key)

    def _transformed(self, obj: Obj) -> Obj:
        assert self.transform is not None
        try:
            return self.transform(obj)
        except Exception:  # user code: keep the object as the server sent it
            log.exception("%s: transform %r failed", self.resource, self.transform)
            return obj

    def _upsert(self, obj: Obj, pending: list[Awaitable[Any]]) -> None:
        if self.transform is not None:
            obj = self._transformed(obj)
        key = meta_namespace_key(obj)
        old = self._items.get(key)
        if old is not None:
            old_rv, new_rv = _rv(old), _rv(obj)
            if old_rv is not None and new_rv is not None and new_rv <= old_rv:
                return  # a replayed or out-of-order event: the cache never goes back in time
        self._items[key] = obj
        self._reindex(key, old, obj)
        if old is None:
            self._notify_add(obj, pending)
        else:
            self._notify_update(old, obj, pending)

    def _remove(self, obj: Obj, pending: list[Awaitable[Any]]) -> None:
        if self.transform is not None:
            obj = self._transformed(obj)
        key = meta_namespace_key(obj)
        old = self._items.get(key)
        if old is None:
            return  # never seen (or already removed by a re-list): nothing to tell handlers
        old_rv, new_rv = _rv(old), _rv(obj)
        if old_rv is not None and new_rv is not None and new_rv < old_rv:
            return  # a stale delete of an earlier object with the same name
        del self._items[key]
        self._reindex(key, old, None)
        self._notify_delete(obj, pending)

    def _replace(self, items: list[Obj], pending: list[Awaitable[Any]]) -> None:
        """Make the cache equal to a fresh list, notifying handlers of the difference."""
        fresh: dict[str, Obj] = {}
        for obj in items:
            if self.transform is not None:
                obj = self._transformed(obj)
            fresh[meta_namespace_key(obj)] = obj
        for key in [k for k in self._items if k not in fresh]:
            old = self._items.pop(key)
            self._reindex(key, old, None)
            self._notify_delete(old, pending)
        for key, obj in fresh.items():
            old = self._items.get(key)
            if old is not None and old.get("metadata", {}).get("resourceVersion") == obj["metadata"].get("resourceVersion"):
                continue
            self._items[key] = obj
            self._reindex(key, old, obj)
            if old is None:
                self._notify_add(obj, pending)
            else:
                self._notify_update(old, obj, pending)

    # -- list and watch -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listing and watching in a background task (idempotent)."""
        self.start_soon()

    def start_soon(self) -> None:
        """start() for synchronous callers inside the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"informer {self.resource}")
        if self.resync_period and (self._resync_task is None or self._resync_task.done()):
            self._resync_task = asyncio.get_running_loop().create_task(self._resync_loop(),
                                                                       name=f"informer {self.resource} resync")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._resync_task) if t is not None]
        self._task = self._resync_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """List and watch until cancelled. After a stop(), start() resumes the watch where it left off."""
        need_list = not self._synced.is_set() or self.resource_version is None
        failures = 0
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    self._synced.set()
                opened = asyncio.get_running_loop().time()
                got = await self._watch()
                failures = 0 if got else failures
                self._clear_error()
                if not got and asyncio.get_running_loop().time() - opened < 1.0:
                    # A stream that ends at once with nothing in it: do not spin.
                    failures += 1
                    await asyncio.sleep(jittered_backoff(failures, self.backoff_base, self.backoff_cap))
            except Expired as error:
                self.stats.expired += 1
                log.info("%s: resourceVersion %s expired (%s); re-listing", self.resource, self.resource_version,
                         error.message)
                if need_list:  # the re-list itself expired: do not hammer the server
                    failures += 1
                    await asyncio.sleep(jittered_backoff(failures, self.backoff_base, self.backoff_cap))
                need_list = True
            except (ConnectionFailed, ApiError) as error:
                failures += 1
                self.stats.reconnects += 1
                delay = jittered_backoff(failures - 1, self.backoff_base, self.backoff_cap)
                if isinstance(error, ApiError) and error.retry_after_seconds:
                    delay = max(delay, error.retry_after_seconds)
                self._report(error, delay)
                await asyncio.sleep(delay)
            except Exception:
                # Anything else is a bug (here, or an object the server should never have sent). An informer
                # that silently died would leave its controllers blind; log it, re-list to be consistent.
                failures += 1
                log.exception("%s: informer failed unexpectedly; re-listing", self.resource)
                need_list = True
                await asyncio.sleep(jittered_backoff(failures, self.backoff_base, self.backoff_cap))

    def _report(self, error: Exception, delay: float) -> None:
        # Log a failure once while it lasts, not on every retry.
        text = f"{type(error).__name__}: {error}"
        if text != self._last_error:
            self._last_error = text
            log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.resource, text, delay)
        else:
            log.debug("%s: list/watch failed again (%s)", self.resource, text)

    def _clear_error(self) -> None:
        if self._last_error is not None:
            log.info("%s: list/watch recovered", self.resource)
            self._last_error = None

    async def _list(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        kind = None
        while True:
            try:
                page = await self.client.list(self.resource, self.namespace, self.label_selector, self.field_selector,
                                              limit=self.page_size, continue_token=token,
                                              metadata_only=self.metadata_only)
            except Expired:
                if token is None:
                    raise
                # The snapshot behind the continue token was compacted: start over in one piece.
                log.info("%s: list continue token expired; listing without pages", self.resource)
                items, token = [], None
                page = await self.client.list(self.resource, self.namespace, self.label_selector, self.field_selector,
                                              metadata_only=self.metadata_only)
            items.extend(page.get("items") or ())
            kind = page.get("kind") or kind
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        self.stats.lists += 1
        # List items carry no kind/apiVersion on the wire; fill them so cached objects look like watched ones.
        if kind and kind.endswith("List"):
            self._kind = kind[: -len("List")]
        if self._kind:
            api_version = "meta.k8s.io/v1" if self._kind == "PartialObjectMetadata" else self.api_version
            for obj in items:
                if "kind" not in obj:
                    obj["kind"] = self._kind
                    obj["apiVersion"] = api_version
        rv = (page.get("metadata") or {}).get("resourceVersion")
        pending: list[Awaitable[Any]] = []
        self._replace(items, pending)
        for awaitable in pending:
            await awaitable
        self.resource_version = rv
        self.last_sync_resource_version = rv

    async def _watch(self) -> int:
        """Watch from the last resourceVersion until the stream ends; return the number of events."""
        low, high = self.watch_timeout
        stream = self.client.watch_batches(self.resource, self.namespace, resource_version=self.resource_version,
                                           label_selector=self.label_selector, field_selector=self.field_selector,
                                           timeout_seconds=random.randint(low, high), allow_bookmarks=True,
                                           read_timeout=self.watch_read_timeout, metadata_only=self.metadata_only)
        self.stats.watches += 1
        count = 0
        pending: list[Awaitable[Any]] = []
        upsert, remove, stats = self._upsert, self._remove, self.stats
        async with contextlib.aclosing(stream):
            async for batch in stream:
                for event_type, obj in batch:
                    count += 1
                    if event_type == "ADDED" or event_type == "MODIFIED":
                        stats.events += 1
                        upsert(obj, pending)
                    elif event_type == "DELETED":
                        stats.events += 1
                        remove(obj, pending)
                    elif event_type == "BOOKMARK":
                        stats.bookmarks += 1
                    else:
                        log.warning("%s: unknown watch event type %r", self.resource, event_type)
                        continue
                    rv = obj["metadata"].get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if pending:
                        for awaitable in pending:
                            await awaitable
                        pending.clear()
        return count

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await asyncio.sleep(self.resync_period)
            if not self._synced.is_set():
                continue
            pending: list[Awaitable[Any]] = []
            for obj in list(self._items.values()):
                self._notify_update(obj, obj, pending)
            for awaitable in pending:
                await awaitable


def _has_labels(obj: Obj, labels: Mapping[str, str]) -> bool:
    own = obj["metadata"].get("labels") or {}
    return all(own.get(k) == v for k, v in labels.items())


def _selector_key(selector: str | Mapping[str, str] | None) -> str | None:
    if not selector:
        return None
    if isinstance(selector, str):
        return ",".join(sorted(part.strip() for part in selector.split(",")))
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


class InformerFactory:
    """Shares informers: one per (resource, namespace, label selector, field selector, metadata only).

    Informers asked for before `start()` start with it; those asked for afterwards start at once.
    """

    def __init__(self, client: Client, resync_period: float | None = None, namespace: str | None = None,
                 transform: Callable[[Obj], Obj] | None = None) -> None:
        self.client = client
        self.resync_period = resync_period
        self.namespace = namespace
        self.transform = transform
        self._informers: dict[tuple[str, str | None, str | None, str | None, bool], Informer] = {}
        self._started = False

    def informer(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        *,
        resync_period: float | None = None,
        transform: Callable[[Obj], Obj] | None = None,
        metadata_only: bool = False,
    ) -> Informer:
        namespace = namespace or self.namespace
        label_key = _selector_key(label_selector)
        field_key = _selector_key(field_selector)
        key = (resource, namespace or None, label_key, field_key, metadata_only)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, resource, namespace, label_key, field_key,
                                resync_period=resync_period if resync_period is not None else self.resync_period,
                                transform=transform or self.transform, metadata_only=metadata_only)
            self._informers[key] = informer
            if self._started:
                informer.start_soon()
        return informer

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    async def start(self) -> None:
        """Start every informer not yet running (idempotent; call again after adding informers)."""
        self._started = True
        for informer in list(self._informers.values()):
            if not informer.running:
                await informer.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until every informer handed out so far has synced."""
        await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in list(self._informers.values()))), timeout)

    @property
    def has_synced(self) -> bool:
        return all(i.has_synced for i in self._informers.values())

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(i.stop() for i in list(self._informers.values())))
