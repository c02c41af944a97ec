"""etcd backend: the real etcd v3 API through `aetcd`, with failover across members and a key prefix.

etcd already is the model of the Store protocol: its revision is the global revision (and so the
`resourceVersion`), `mod_revision`/`create_revision` are per key, a transaction comparing
`mod_revision` is compare-and-swap, ranges read at any kept revision, and watches start from a
revision. This module maps those one to one; every request goes to the KV stub that `aetcd` opens,
so that create/update/delete are single transactions that also return what the caller needs
(the current value on a failed compare, the previous value of a delete).

Failover: `aetcd` talks to one endpoint, so the store keeps the list of members and, when a request
fails because the member is unreachable (or has no leader), reconnects to the next member and
retries until `failover_timeout` has passed; only then does it raise StoreUnavailable. A retried
write may have been applied by the member that failed: as with any etcd client, such a write can
surface as KeyExists/RevisionMismatch on retry, never as a lost acknowledged write.

Watches share the client's one gRPC watch stream. Each watch has a bounded queue; a watcher that
falls `watch_queue_size` events behind is cut off with WatchLagging. When the stream breaks (a
member died), every watch resumes on the next member from the revision after the last event it
received, so no event is lost or repeated.

Compaction: like kube-apiserver, the store compacts etcd in the background, keeping the window
described in `pinnace.store.compaction`; several pinnace servers compacting the same etcd is harmless.

Keys: every key is stored as `prefix + key`, and the prefix is stripped from results; a key that
is not an absolute path is refused with InvalidKey.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc

from pinnace.store.base import (
    Compacted,
    Event,
    FutureRevision,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    StoreUnavailable,
    WatchLagging,
    check_key,
)
from pinnace.store.compaction import (
    DEFAULT_KEEP_REVISIONS,
    DEFAULT_KEEP_SECONDS,
    CompactionWindow,
    compact_periodically,
)
from pinnace.store.wakeup import Wakeup

log = logging.getLogger(__name__)

T = TypeVar("T")

# gRPC codes that mean "this member cannot serve us now": try the next one.
RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RETRY_ERRORS = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError)
WAKE_INTERVAL = 0.005  # seconds; see _Hub._schedule_wake
MAX_MESSAGE = 64 << 20  # etcd accepts requests up to 1.5 MiB by default; responses (lists) can be larger


def _range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix"."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(eq=False, slots=True)
class _Watch:
    limit: int
    events: collections.deque[Event] = field(default_factory=collections.deque)
    wakeup: Wakeup = field(default_factory=Wakeup)
    error: BaseException | None = None
    closed: bool = False
    last: int = 0  # the revision of the last event yielded


class EtcdStore:
    """A Store on etcd members `endpoints` ("host:port"), tried in order. `await start()` before use."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        prefix: str = "",
        watch_queue_size: int = 1024,
        hub_history: int = 1000,
        request_timeout: float = 5.0,
        failover_timeout: float = 15.0,
        compact_interval: float = 60.0,
        compact_keep_seconds: float = DEFAULT_KEEP_SECONDS,
        compact_keep_revisions: int = DEFAULT_KEEP_REVISIONS,
    ) -> None:
        if not endpoints:
            raise StoreUnavailable("no etcd endpoint given; list the members as etcd://host:2379,host2:2379")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise InvalidKey(f"etcd key prefix {prefix!r} must start with '/' and not end with '/'")
        # "host" alone means etcd's client port; IPv6 literals come as "[::1]:2379".
        self.endpoints = [e if e.rpartition(":")[2].isdigit() else f"{e}:2379" for e in endpoints]
        self.prefix = prefix
        self._prefix_bytes = prefix.encode()
        self.watch_queue_size = watch_queue_size
        self.hub_history = hub_history
        self.compact_interval = compact_interval
        self.compaction_window = CompactionWindow(compact_keep_seconds, compact_keep_revisions)
        self._compactor: asyncio.Task[None] | None = None
        self._hubs: dict[str, _Hub] = {}
        self.request_timeout = request_timeout
        self.failover_timeout = failover_timeout
        self._index = 0
        self._client: aetcd.Client | None = None
        self._generation = 0  # bumped on each reconnect, so concurrent failures rotate only once
        self._reconnect_lock = asyncio.Lock()
        self._compacted = 0
        self._closed = True
        self._old_clients: list[aetcd.Client] = []
        self._closers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> EtcdStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connection and failover ---

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    def _new_client(self) -> aetcd.Client:
        host, _, port = self.endpoint.rpartition(":")
        host = host.strip("[]")
        options = {
            "grpc.max_send_message_length": MAX_MESSAGE,
            "grpc.max_receive_message_length": MAX_MESSAGE,
        }
        return aetcd.Client(
            host=host or "127.0.0.1", port=int(port), timeout=self.request_timeout, options=options
        )

    async def start(self) -> None:
        self._closed = False
        self._client = self._new_client()
        try:
            # Fail now, clearly, if no member answers, instead of on the first request.
            await self._call(
                lambda kv: kv.Range(rpc.RangeRequest(key=self._key("/"), count_only=True), **self._opts())
            )
            self._compacted = await self._find_compacted()
        except BaseException:
            await self.close()
            raise
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(
                compact_periodically(self, self.compaction_window, self.compact_interval),
                name="etcd-compactor",
            )

    async def close(self) -> None:
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
            self._compactor = None
        for hub in list(self._hubs.values()):
            hub._fail(None)
            if hub.task is not None:
                hub.task.cancel()
        self._hubs.clear()
        for task in self._closers:
            task.cancel()
        self._closers.clear()
        clients = [*self._old_clients, self._client]
        self._old_clients = []
        self._client = None
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):  # closing a connection to a dead member may fail
                    await client.close()

    def _opts(self) -> dict[str, Any]:
        return {"timeout": self.request_timeout}

    async def _connected(self) -> aetcd.Client:
        if self._closed or self._client is None:
            raise StoreUnavailable(f"the etcd store at {','.join(self.endpoints)} is closed")
        if self._client.kvstub is None:  # connect() only builds the channel; skip it once done
            await self._client.connect()
        return self._client

    async def _rotate(self, generation: int) -> None:
        async with self._reconnect_lock:
            if generation != self._generation or self._closed:
                return  # someone else already moved on
            old = self._client
            self._index = (self._index + 1) % len(self.endpoints)
            self._generation += 1
            self._client = self._new_client()
            log.warning("etcd: switching to member %s", self.endpoint)
            if old is not None:
                self._old_clients.append(old)
                self._closers.add(asyncio.get_running_loop().create_task(self._close_later(old)))

    async def _close_later(self, client: aetcd.Client) -> None:
        # Let calls still in flight on the old member finish (or time out) before closing its channel.
        await asyncio.sleep(self.request_timeout + 1)
        with contextlib.suppress(Exception):
            await client.close()
        with contextlib.suppress(ValueError):
            self._old_clients.remove(client)
        task = asyncio.current_task()
        if task is not None:
            self._closers.discard(task)

    async def _call(self, fn: Callable[[Any], Awaitable[T]], retried: list[bool] | None = None) -> T:
        """Run `fn(kv_stub)`, moving to the next member while members are unreachable.

        `retried[0]` is set when a failed attempt was repeated: that attempt may have been applied.
        """
        deadline = time.monotonic() + self.failover_timeout
        delay = 0.05
        while True:
            error: Exception
            generation = self._generation
            if retried is not None and delay > 0.05:
                retried[0] = True
            try:
                client = await self._connected()
                return await fn(client.kvstub)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller was cancelled
                # The call died with the channel of a member we moved away from: retry elsewhere.
                error = StoreUnavailable(f"the connection to {self.endpoint} was closed")
            except grpc.aio.AioRpcError as e:
                if e.code() not in RETRY_CODES:
                    raise self._translate(e) from None
                error = e
            except RETRY_ERRORS as e:
                error = e
            if self._closed:
                raise StoreUnavailable(f"the etcd store at {','.join(self.endpoints)} is closed")
            if time.monotonic() >= deadline:
                raise self._unreachable(error)
            await self._rotate(generation)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _unreachable(self, error: Exception) -> StoreUnavailable:
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        return StoreUnavailable(
            f"cannot reach etcd at {', '.join(self.endpoints)} for {self.failover_timeout:g}s ({detail}); "
            "check that etcd is running, listening on these addresses, and has a leader"
        )

    def _translate(self, e: grpc.aio.AioRpcError) -> Exception:
        details = e.details() or ""
        if "compacted" in details:
            return Compacted(0, self._compacted)
        if "future revision" in details:
            return FutureRevision(0, 0)
        if "request is too large" in details:
            return StoreUnavailable(f"etcd refused the request: {details}; raise etcd's --max-request-bytes")
        return StoreUnavailable(f"etcd at {self.endpoint} failed: {e.code().name}: {details}")

    # --- keys ---

    def _key(self, key: str) -> bytes:
        return self._prefix_bytes + key.encode()

    def _strip(self, key: bytes) -> str:
        if not key.startswith(self._prefix_bytes):
            raise InvalidKey(f"etcd returned key {key!r} outside the prefix {self.prefix!r}")
        return key[len(self._prefix_bytes) :].decode()

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(self._strip(kv.key), kv.value, kv.create_revision, kv.mod_revision)

    # --- writes ---

    async def _txn(self, request: rpc.TxnRequest) -> tuple[Any, bool]:
        """The response, and whether an earlier attempt failed in a way that may have applied it."""
        retried = [False]
        response = await self._call(lambda kv: kv.Txn(request, **self._opts()), retried)
        return response, retried[0]

    @staticmethod
    def _was_ours(response: Any, value: bytes, created: bool) -> int | None:
        """After a retry, the key as our lost first attempt would have left it: its revision, or None.

        A failed compare that finds exactly the value we wrote, unchanged since, is our own earlier
        attempt (the apiserver's values carry a uid and resourceVersion-independent content, so an
        identical value from someone else at the same instant does not happen in practice).
        """
        kvs = response.responses[0].response_range.kvs if response.responses else []
        if kvs and kvs[0].value == value and (not created or kvs[0].create_revision == kvs[0].mod_revision):
            return kvs[0].mod_revision
        return None

    async def create(self, key: str, value: bytes) -> int:
        check_key(key)
        k = self._key(key)
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(key=k, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
            ],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
        )
        response, retried = await self._txn(request)
        if not response.succeeded:
            if retried and (revision := self._was_ours(response, value, created=True)) is not None:
                return revision
            raise KeyExists(key)
        return response.header.revision

    def _guarded(self, k: bytes, expected: int | None, op: rpc.RequestOp) -> rpc.TxnRequest:
        # CREATE > 0 means "the key exists"; without it, MOD == 0 would match an absent key.
        compare = [
            rpc.Compare(key=k, target=rpc.Compare.CREATE, result=rpc.Compare.GREATER, create_revision=0)
        ]
        if expected is not None:
            compare.append(
                rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=expected)
            )
        return rpc.TxnRequest(
            compare=compare, success=[op], failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))]
        )

    def _failed(self, key: str, expected: int | None, response: Any) -> Exception:
        kvs = response.responses[0].response_range.kvs
        if not kvs:
            return KeyNotFound(key)
        return RevisionMismatch(key, expected or 0, self._kv(kvs[0]))

    async def update(self, key: str, value: bytes, expected_revision: int | None) -> int:
        check_key(key)
        k = self._key(key)
        op = rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))
        response, retried = await self._txn(self._guarded(k, expected_revision, op))
        if not response.succeeded:
            if retried and (revision := self._was_ours(response, value, created=False)) is not None:
                return revision
            raise self._failed(key, expected_revision, response)
        return response.header.revision

    async def delete(self, key: str, expected_revision: int | None = None) -> KeyValue:
        check_key(key)
        k = self._key(key)
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, prev_kv=True))
        response, _ = await self._txn(self._guarded(k, expected_revision, op))
        if not response.succeeded:
            raise self._failed(key, expected_revision, response)
        prev = response.responses[0].response_delete_range.prev_kvs
        if not prev:  # deleted by someone else between compare and delete cannot happen in one txn
            raise KeyNotFound(key)
        return KeyValue(key, prev[0].value, prev[0].create_revision, response.header.revision)

    # --- reads ---

    async def _range(self, request: rpc.RangeRequest) -> Any:
        try:
            return await self._call(lambda kv: kv.Range(request, **self._opts()))
        except Compacted:
            compacted = await self._find_compacted()
            raise Compacted(request.revision, compacted) from None
        except FutureRevision:
            raise FutureRevision(request.revision, await self.current_revision()) from None

    async def current_revision(self) -> int:
        response = await self._call(
            lambda kv: kv.Range(rpc.RangeRequest(key=self._key("/"), count_only=True), **self._opts())
        )
        return response.header.revision

    async def _find_compacted(self) -> int:
        """etcd's compacted revision (0: never compacted).

        etcd reports it only to a watch that starts below it, and only after its next sync of slow
        watchers (every 100 ms), so first ask cheaply whether anything was compacted at all.
        """
        known = self._compacted or 1
        try:
            await self._call(
                lambda kv: kv.Range(
                    rpc.RangeRequest(key=self._key("/"), revision=known, count_only=True), **self._opts()
                )
            )
            return self._compacted  # the last known compacted revision is still readable: unchanged
        except Compacted:
            pass
        client = await self._connected()
        try:
            watch = await client.watch(self._key("/\0compaction-probe"), start_revision=1)
        except aetcd.exceptions.RevisionCompactedError as e:
            self._compacted = max(self._compacted, e.compacted_revision)
            return self._compacted
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(anext(aiter(watch)), 2)
        except aetcd.exceptions.RevisionCompactedError as e:
            self._compacted = max(self._compacted, e.compacted_revision)
        finally:
            with contextlib.suppress(Exception):
                await watch.cancel()
        return self._compacted

    async def compacted_revision(self) -> int:
        return await self._find_compacted()

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        check_key(key)
        response = await self._range(rpc.RangeRequest(key=self._key(key), revision=revision or 0))
        return self._kv(response.kvs[0]) if response.kvs else None

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        limit: int = 0,
        start_after: str | None = None,
    ) -> ListResult:
        full = self._key(prefix)
        start = self._key(start_after) + b"\0" if start_after is not None and start_after >= prefix else full
        request = rpc.RangeRequest(
            key=start or b"\0", range_end=_range_end(full), revision=revision or 0, limit=max(limit, 0)
        )
        response = await self._range(request)
        items = [self._kv(kv) for kv in response.kvs]
        remaining = response.count - len(items)
        return ListResult(items, revision or response.header.revision, response.more, remaining)

    async def count(self, prefix: str) -> int:
        full = self._key(prefix)
        response = await self._range(
            rpc.RangeRequest(key=full or b"\0", range_end=_range_end(full), count_only=True)
        )
        return response.count

    async def compact(self, revision: int) -> None:
        current = await self.current_revision()
        if revision > current:
            raise FutureRevision(revision, current)
        if revision <= self._compacted:
            return
        try:
            await self._call(
                lambda kv: kv.Compact(rpc.CompactionRequest(revision=revision, physical=True), **self._opts())
            )
        except Compacted:
            pass  # someone compacted further already: nothing to do
        self._compacted = max(self._compacted, revision)

    # --- watch ---

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:
        # etcd would still serve a watch from the compacted revision itself (its state is kept), but
        # the contract is "events after a kept revision", as for SQLite: refuse what etcd also forgot.
        if after_revision < self._compacted:
            raise Compacted(after_revision, self._compacted)
        if self._closed:
            raise StoreUnavailable(f"the etcd store at {','.join(self.endpoints)} is closed")
        w = _Watch(self.watch_queue_size, last=after_revision)
        hub = self._hubs.get(prefix)
        if hub is not None and not hub.failed and after_revision >= hub.history_from:
            # The shared etcd watch has seen everything after `history_from`: replay from its
            # history, then go live, without waiting for anything (so without a gap).
            for event in hub.history:
                if event.revision > after_revision:
                    w.events.append(event)
            if len(w.events) > w.limit:
                raise WatchLagging(f"watch from revision {after_revision} is too far behind; re-list")
        else:
            shared = hub is None or hub.failed
            hub = _Hub(self, prefix, after_revision, self.hub_history)
            if shared:
                self._hubs[prefix] = hub
            hub.task = asyncio.create_task(hub.run(), name=f"etcd-watch {prefix}")
        hub.watchers.add(w)
        try:
            while True:
                while w.events:
                    event = w.events.popleft()
                    if event.revision > w.last:
                        w.last = event.revision
                        yield event
                if w.error is not None:
                    raise w.error
                if w.closed:
                    return
                await w.wakeup.wait()
        finally:
            hub.watchers.discard(w)
            if not hub.watchers:
                if self._hubs.get(prefix) is hub:
                    del self._hubs[prefix]
                if hub.task is not None:
                    hub.task.cancel()


class _Hub:
    """One etcd watch on a prefix, fanned out to every local watcher of that prefix.

    It keeps the last `history_size` events so that a watcher starting from a recent revision (the
    usual list-then-watch) joins it instead of opening its own etcd watch. A watcher starting before
    that history gets a hub of its own.
    """

    def __init__(self, store: EtcdStore, prefix: str, after_revision: int, history_size: int) -> None:
        self.store = store
        self.prefix = prefix
        self.key = store._key(prefix) or b"\0"
        self.end = _range_end(store._key(prefix))
        self.last = after_revision  # every event up to here has been delivered
        self.history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self.history_from = after_revision  # `history` holds every event after this revision
        self.watchers: set[_Watch] = set()
        self.task: asyncio.Task[None] | None = None
        self.broken = asyncio.Event()
        self.failed = False  # a final error went to the watchers: stop watching
        self._last_wake = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        store = self.store
        deadline: float | None = None
        try:
            while not store._closed and not self.failed:
                client = await store._connected()
                generation = store._generation
                try:
                    handle = await client._watcher.add_callback(
                        self.key,
                        self._on_event,
                        range_end=self.end,
                        start_revision=self.last + 1,
                        prev_kv=True,
                    )
                except aetcd.exceptions.RevisionCompactedError as e:
                    store._compacted = max(store._compacted, e.compacted_revision)
                    self._fail(Compacted(self.last, e.compacted_revision))
                    return
                except (*RETRY_ERRORS, grpc.aio.AioRpcError, aetcd.exceptions.ClientError) as e:
                    # The member is gone: try the next one until the failover deadline.
                    deadline = deadline or time.monotonic() + store.failover_timeout
                    if time.monotonic() >= deadline:
                        self._fail(store._unreachable(e))
                        return
                    await store._rotate(generation)
                    await asyncio.sleep(0.1)
                    continue
                deadline = None
                self.broken.clear()
                try:
                    await self.broken.wait()
                finally:
                    if not self.broken.is_set() and handle.watch_id is not None:
                        with contextlib.suppress(Exception):  # best effort: the stream may be gone
                            await client._watcher.cancel(handle.watch_id)
                if not self.failed:
                    await store._rotate(generation)
            self._fail(None)
        except StoreUnavailable as e:
            self._fail(e)

    def _fail(self, error: BaseException | None) -> None:
        self.failed = True
        for w in self.watchers:
            if error is None:
                w.closed = True
            elif w.error is None:
                w.error = error
            w.wakeup.set()

    async def _on_event(self, event: Any) -> None:
        if isinstance(event, BaseException) or event is None:
            if isinstance(event, aetcd.exceptions.RevisionCompactedError):
                self._fail(Compacted(self.last, event.compacted_revision))
            self.broken.set()  # the stream died (with its member): resume elsewhere from self.last
            return
        kv = event.kv
        if kv.mod_revision <= self.last:
            return  # already delivered before a resume
        key = self.store._strip(kv.key)
        prev = event.prev_kv
        if event.kind == "DELETE":
            e = Event(
                "DELETED",
                key,
                kv.mod_revision,
                None,
                prev.value if prev else None,
                prev.create_revision if prev else 0,
            )
        elif kv.create_revision == kv.mod_revision:
            e = Event("ADDED", key, kv.mod_revision, kv.value, None, kv.create_revision)
        else:
            e = Event(
                "MODIFIED", key, kv.mod_revision, kv.value, prev.value if prev else None, kv.create_revision
            )
        self.last = e.revision
        if len(self.history) == self.history.maxlen:
            self.history_from = self.history[0].revision
        self.history.append(e)
        for w in list(self.watchers):
            if w.error is not None:
                continue
            if len(w.events) >= w.limit:
                w.error = WatchLagging(
                    f"watch on {self.prefix!r} fell more than {w.limit} events behind at revision {w.last} "
                    "and was cut off; re-list and watch again from the list's revision"
                )
                w.events.clear()  # it must re-list anyway: free the memory now
                self.watchers.discard(w)
                w.wakeup.set()
            else:
                w.events.append(e)
        self._schedule_wake()

    def _schedule_wake(self) -> None:
        """Wake the watchers now, or, if they were woken less than WAKE_INTERVAL ago, then.

        etcd sends each change in its own message. Waking every watcher task for every message costs
        more CPU than anything else at high rates; waking at most every WAKE_INTERVAL lets a busy
        stream hand each watcher several events per wakeup, while a lone change is delivered at once.
        """
        if self._wake_handle is not None:
            return  # a wakeup is already due and will carry this event too
        loop = asyncio.get_running_loop()
        delay = self._last_wake + WAKE_INTERVAL - loop.time()
        if delay <= 0:
            self._wake()
        else:
            self._wake_handle = loop.call_later(delay, self._wake)

    def _wake(self) -> None:
        self._wake_handle = None
        self._last_wake = asyncio.get_running_loop().time()
        for w in self.watchers:
            if w.events:
                w.wakeup.set()
