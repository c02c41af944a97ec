"""A work queue of object keys with client-go's guarantees.

- Deduplication: a key added many times before a worker takes it is handed out once. Handlers may enqueue
  on every event without flooding the workers; reconcile is level-triggered, so one pass sees the latest.
- One worker per key: a key is "processing" from `get()` until `done()`. Adding it meanwhile marks it
  dirty, and `done()` puts it back, so two workers never reconcile the same object at once and no change
  is missed.
- Retries: `add_rate_limited(key)` re-adds after the rate limiter's delay (per-key exponential back-off
  5 ms .. 1,000 s, and an overall token bucket); `forget(key)` resets the key's back-off after a success.
- Delays: `add_after(key, seconds)` (a requeue for a later check, such as a readiness timeout).
- Shut-down: `shutdown()` wakes every waiting `get()` with None; `shutdown_with_drain()` also waits for the
  keys being processed to be `done()`.

Time comes from an injectable `Clock`, so tests drive back-off with a FakeClock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from pinnace.client.clock import SYSTEM_CLOCK, Clock
from pinnace.client.ratelimit import RateLimiter, default_controller_rate_limiter


@dataclass
class QueueMetrics:
    """Counters in the spirit of client-go's workqueue metrics (all times in seconds)."""

    adds: int = 0  # add() calls that queued or marked a key (duplicates of a queued key not counted)
    retries: int = 0  # add_rate_limited() calls
    wait_seconds_total: float = 0.0  # time keys spent queued before a worker took them
    wait_seconds_max: float = 0.0
    work_seconds_total: float = 0.0  # time between get() and done()
    work_seconds_max: float = 0.0
    processed: int = 0  # done() calls
    depth: int = 0  # keys queued now (kept current by the queue)
    waiting_delayed: int = 0  # keys waiting for add_after / add_rate_limited delays
    recent_wait: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    recent_work: deque[float] = field(default_factory=lambda: deque(maxlen=1024))


class WorkQueue:
    def __init__(self, name: str = "", rate_limiter: RateLimiter | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = name
        self.clock = clock
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(clock)
        self.metrics = QueueMetrics()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        self._shutting_down = False
        # Futures of get() calls waiting for a key, and of shutdown_with_drain() waiting for idleness.
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle_waiters: deque[asyncio.Future[None]] = deque()
        # Delayed keys: heap of (due time, seq, key); `_due` keeps the earliest due time per key so that
        # a later, longer delay never postpones an earlier one (client-go's waitingForQueue semantics).
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._delay_task: asyncio.Task[None] | None = None
        self._delay_wakeup: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self, waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def add(self, key: Hashable) -> None:
        """Queue `key` unless it is already queued; if it is being processed, queue it again after done()."""
        if self._shutting_down:
            return
        if key in self._dirty:
            return
        self.metrics.adds += 1
        self._dirty.add(key)
        self._added_at.setdefault(key, self.clock.now())
        if key in self._processing:
            return
        self._queue.append(key)
        self.metrics.depth = len(self._queue)
        self._wake_one()

    async def get(self) -> Hashable | None:
        """Wait for a key and mark it processing; None once the queue is shut down."""
        while not self._queue:
            if self._shutting_down:
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # We may have been woken for a key just before being cancelled: pass the wake-up on.
                if waiter.done() and not waiter.cancelled() and self._queue:
                    self._wake_one()
                raise
        if self._shutting_down:
            return None
        key = self._queue.popleft()
        self.metrics.depth = len(self._queue)
        self._processing.add(key)
        self._dirty.discard(key)
        now = self.clock.now()
        self._record(now - self._added_at.pop(key, now), "wait")
        self._started_at[key] = now
        if self._queue:
            self._wake_one()  # a getter woken with others queued behind keeps the chain going
        return key

    def done(self, key: Hashable) -> None:
        """The worker finished with `key` (successfully or not); re-queue it if it was added meanwhile."""
        if key not in self._processing:
            return
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if started is not None:
            self._record(self.clock.now() - started, "work")
        self.metrics.processed += 1
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self.metrics.depth = len(self._queue)
            self._wake_one()
        if not self._processing:
            self._wake_all(self._idle_waiters)

    def _record(self, seconds: float, kind: str) -> None:
        m = self.metrics
        if kind == "wait":
            m.wait_seconds_total += seconds
            m.wait_seconds_max = max(m.wait_seconds_max, seconds)
            m.recent_wait.append(seconds)
        else:
            m.work_seconds_total += seconds
            m.work_seconds_max = max(m.work_seconds_max, seconds)
            m.recent_work.append(seconds)

    # -- delays and retries ------------------------------------------------------------------------------

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add `key` after `delay` seconds (at once if delay <= 0)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self.clock.now() + delay
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key))
        self.metrics.waiting_delayed = len(self._due)
        self._ensure_delay_task()
        if self._delay_wakeup is not None:
            self._delay_wakeup.set()

    def add_rate_limited(self, key: Hashable) -> None:
        """Retry `key` after its back-off (exponential per key, and the overall bucket)."""
        if self._shutting_down:
            return
        self.metrics.retries += 1
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: Hashable) -> None:
        """`key` succeeded: stop tracking its failures (its back-off starts over)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return self.rate_limiter.num_requeues(key)

    def _ensure_delay_task(self) -> None:
        if self._delay_task is None or self._delay_task.done():
            self._delay_wakeup = asyncio.Event()
            self._delay_task = asyncio.get_running_loop().create_task(self._delay_loop(), name=f"workqueue-{self.name}-delays")

    def _release_due(self) -> float | None:
        """Move due keys into the queue; return seconds until the next one, None if none left."""
        now = self.clock.now()
        while self._delayed:
            due, _, key = self._delayed[0]
            if self._due.get(key) != due:  # superseded by an earlier due time
                heapq.heappop(self._delayed)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self.add(key)
        self.metrics.waiting_delayed = len(self._due)
        return None

    async def _delay_loop(self) -> None:
        wakeup = self._delay_wakeup
        assert wakeup is not None
        while not self._shutting_down:
            wakeup.clear()
            wait = self._release_due()
            self.metrics.waiting_delayed = len(self._due)
            sleeper = asyncio.ensure_future(self.clock.sleep(wait)) if wait is not None else None
            waker = asyncio.ensure_future(wakeup.wait())
            waiters = {waker} if sleeper is None else {waker, sleeper}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waiters:
                    task.cancel()

    # -- shut-down -----------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop handing out keys: every waiting and future get() returns None; adds are ignored."""
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._delay_task is not None:
            self._delay_task.cancel()
        self._wake_all(self._getters)

    async def shutdown_with_drain(self, timeout: float | None = None) -> None:
        """Shut down, then wait (up to `timeout`) for keys being processed to be done()."""
        self.shutdown()
        if not self._processing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await asyncio.wait_for(waiter, timeout)

    @property
    def processing(self) -> frozenset[Hashable]:
        return frozenset(self._processing)

    def queued(self) -> list[Hashable]:
        return list(self._queue)
