"""Wakeup: how a store wakes one watcher task, cheaply enough for thousands of watchers per event."""

from __future__ import annotations

import asyncio


class Wakeup:
    """An asyncio.Event for exactly one waiter, without its bookkeeping.

    Unlike an Event, a `set()` while nobody waits is dropped: the waiter must check its queue (and
    any error flag) right before `wait()`, with no `await` in between, which the single-threaded
    event loop makes race-free.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None
