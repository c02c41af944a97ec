"""EventRecorder: core/v1 Events about objects, as `kubectl describe` shows them.

`event(obj, type, reason, message)` never blocks and never raises: it queues the event and a background
task sends it. Like client-go's recorder (tools/record):
- Repeats are aggregated: the same involved object, type, reason, message and source update the existing
  Event (`count` + 1, `lastTimestamp` now) with a merge patch instead of creating another one. If that Event
  is gone (events expire), a new one is created.
- Many *different* messages for the same object and reason (10 within 10 minutes) are folded into one Event
  whose message starts with "(combined from similar events): ", so a flapping object cannot flood the store.
- Event names are `<object name>.<unix nanoseconds in hex>`, in the object's namespace ("default" for
  cluster-scoped objects such as Nodes).
- A spam filter per source and object (a token bucket: burst 25, then one event per 5 minutes, as
  client-go's `EventSourceObjectSpamFilter`) drops the excess of a runaway loop before it costs a request.
Events are best effort: when the queue is full (the API server is down for long) new events are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pinnace.client.errors import AlreadyExists, ApiError, NotFound
from pinnace.client.ratelimit import TokenBucket
from pinnace.client.rest import Client, ConnectionFailed

log = logging.getLogger("pinnace.client.events")

EVENTS = "v1/events"
SIMILAR_EVENTS_THRESHOLD = 10
SIMILAR_EVENTS_WINDOW = 600.0
COMBINED_PREFIX = "(combined from similar events): "


def rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ObjectReference of an object (or a reference passed in as-is)."""
    if "metadata" not in obj:
        return {k: v for k, v in obj.items() if v is not None}
    meta = obj["metadata"]
    ref = {
        "kind": obj.get("kind"),
        "apiVersion": obj.get("apiVersion"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {k: v for k, v in ref.items() if v}


@dataclass
class _Recorded:
    name: str
    namespace: str
    count: int
    first_timestamp: str


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str | None = None, *, max_queue: int = 1000,
                 cache_size: int = 4096, spam_burst: int = 25, spam_qps: float = 1 / 300) -> None:
        self.client = client
        self.component = component
        self.host = host if host is not None else socket.gethostname()
        self.cache_size = cache_size
        self.dropped = 0
        self.sent = 0
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        # Aggregation state: LRU of sent events by identity, and recent distinct messages per (object, reason).
        self._recorded: OrderedDict[tuple[Any, ...], _Recorded] = OrderedDict()
        self._similar: OrderedDict[tuple[Any, ...], deque[tuple[float, str]]] = OrderedDict()
        self._closed = False
        self._failing = False
        self.spam_burst = spam_burst
        self.spam_qps = spam_qps
        self._spam: OrderedDict[tuple[Any, ...], TokenBucket] = OrderedDict()

    def event(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        """Record an event about `obj` ("Normal" or "Warning"); returns at once."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.debug("event %s/%s dropped: no running event loop", reason, message)
            return
        ref = object_reference(obj)
        if not self._allowed(ref):
            self.dropped += 1
            log.debug("event %s on %s dropped by the spam filter", reason, ref.get("name"))
            return
        try:
            self._queue.put_nowait((ref, type, reason, message, rfc3339()))
        except asyncio.QueueFull:
            self.dropped += 1
            log.debug("event queue full; dropped %s %s", reason, message)
            return
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._send_loop(), name=f"events {self.component}")

    def _allowed(self, ref: dict[str, Any]) -> bool:
        key = (ref.get("namespace"), ref.get("kind"), ref.get("name"), ref.get("uid"))
        bucket = self._spam.get(key)
        if bucket is None:
            bucket = self._spam[key] = TokenBucket(self.spam_qps, self.spam_burst)
            if len(self._spam) > self.cache_size:
                self._spam.popitem(last=False)
        else:
            self._spam.move_to_end(key)
        return bucket.try_take()

    def eventf(self, obj: Mapping[str, Any], type: str, reason: str, fmt: str, *args: Any) -> None:
        self.event(obj, type, reason, fmt % args if args else fmt)

    async def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every queued event was sent (or given up on). For tests and clean shut-down."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        """Send what is queued (briefly), then stop the sender."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    stop = close

    async def _send_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(*item)
                self._failing = False
            except (ApiError, ConnectionFailed) as error:
                # Once per outage at warning level: an unreachable server must not flood the log too.
                level = logging.DEBUG if self._failing else logging.WARNING
                self._failing = True
                log.log(level, "could not record event %s on %s: %s", item[2], item[0].get("name"), error)
            finally:
                self._queue.task_done()

    def _combine(self, ref: dict[str, Any], type: str, reason: str, message: str) -> str:
        key = (ref.get("namespace"), ref.get("kind"), ref.get("name"), ref.get("uid"), type, reason)
        now = time.monotonic()
        seen = self._similar.get(key)
        if seen is None:
            seen = self._similar[key] = deque()
        else:
            self._similar.move_to_end(key)
        while seen and now - seen[0][0] > SIMILAR_EVENTS_WINDOW:
            seen.popleft()
        if all(m != message for _, m in seen):
            seen.append((now, message))
        if len(self._similar) > self.cache_size:
            self._similar.popitem(last=False)
        if len(seen) >= SIMILAR_EVENTS_THRESHOLD:
            return COMBINED_PREFIX + message
        return message

    async def _send(self, ref: dict[str, Any], type: str, reason: str, message: str, timestamp: str) -> None:
        message = self._combine(ref, type, reason, message)
        combined = message.startswith(COMBINED_PREFIX)
        identity = (ref.get("namespace"), ref.get("kind"), ref.get("name"), ref.get("uid"), ref.get("apiVersion"),
                    type, reason, COMBINED_PREFIX if combined else message, self.component, self.host)
        namespace = ref.get("namespace") or "default"
        recorded = self._recorded.get(identity)
        if recorded is not None:
            self._recorded.move_to_end(identity)
            patch = {"count": recorded.count + 1, "lastTimestamp": timestamp, "message": message}
            try:
                await self.client.patch(EVENTS, recorded.name, patch, namespace=recorded.namespace)
                recorded.count += 1
                self.sent += 1
                return
            except NotFound:
                del self._recorded[identity]  # expired or deleted: start a new one below
        name = f"{ref.get('name') or 'unknown'}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        try:
            await self.client.create(EVENTS, body, namespace=namespace)
        except AlreadyExists:
            pass  # a create retried after a broken connection that had in fact succeeded
        self.sent += 1
        self._recorded[identity] = _Recorded(name, namespace, 1, timestamp)
        if len(self._recorded) > self.cache_size:
            self._recorded.popitem(last=False)
