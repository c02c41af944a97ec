"""Background compaction: keep a window of history, drop what is older.

The window is the larger of a time span (default the last 5 minutes, like kube-apiserver's
`--etcd-compaction-interval`) and a number of revisions (default 10,000): a watcher that reconnects
after a short outage, or a busy cluster's list-then-watch, still finds its revision. Both backends
run the same loop; it compacts through the Store protocol, so etcd compacts through etcd itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Protocol

from pinnace.store.base import StoreError

log = logging.getLogger(__name__)

DEFAULT_KEEP_SECONDS = 300.0
DEFAULT_KEEP_REVISIONS = 10_000


class CompactionWindow:
    """Remembers (time, revision) samples and says which revision may be compacted now."""

    def __init__(
        self, keep_seconds: float = DEFAULT_KEEP_SECONDS, keep_revisions: int = DEFAULT_KEEP_REVISIONS
    ) -> None:
        self.keep_seconds = keep_seconds
        self.keep_revisions = keep_revisions
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, now: float, revision: int) -> None:
        self.samples.append((now, revision))
        # Only the newest sample older than the time window matters; drop the ones before it.
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.keep_seconds:
            self.samples.popleft()

    def target(self, now: float, current: int) -> int:
        """The revision to compact to: the older of the two window edges (0: nothing yet)."""
        by_count = current - self.keep_revisions
        by_time = 0  # until a sample is older than the window, all of it is inside the window
        for t, revision in self.samples:
            if t > now - self.keep_seconds:
                break
            by_time = revision
        return max(0, min(by_count, by_time))


class _Compactable(Protocol):
    async def current_revision(self) -> int: ...

    async def compacted_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...


async def compact_periodically(store: _Compactable, window: CompactionWindow, interval: float) -> None:
    """Runs until cancelled: every `interval` seconds, compact whatever left the window."""
    while True:
        try:
            now = time.monotonic()
            current = await store.current_revision()
            window.observe(now, current)
            target = window.target(now, current)
            if target > await store.compacted_revision():
                await store.compact(target)
        except StoreError as e:  # a dead etcd member or a full disk must not end the loop
            log.warning("background compaction failed: %s", e)
        await asyncio.sleep(interval)
