"""The scheduling queue: which pending pod to try next, and when to try a failed one again.

Three parts, as in Kubernetes' PriorityQueue:
- active: pods ready to be tried, highest priority first, then first come first served;
- back-off: pods that failed recently and wait 1 s, 2 s, 4 s ... up to 10 s (per attempt) before
  going back to active;
- unschedulable: pods no node could take. They stay until a cluster event that could make them fit
  (a node added or changed, a pod deleted, ...) moves them out, filtered by the events the plugins
  that rejected them registered; and at the latest after 5 minutes.

A pod that failed while a move request happened during its cycle goes to back-off instead of
unschedulable, so the event that could have helped it is not lost.

The queue also tracks nominated pods (preemptors waiting for their victims to go), so filters can
keep their room free for them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from pinnace.scheduler.framework import PodInfo

UNSCHEDULABLE_MAX_DURATION = 300.0
BACKOFF_FLUSH_INTERVAL = 1.0
UNSCHEDULABLE_FLUSH_INTERVAL = 30.0


class QueuedPodInfo:
    __slots__ = ("attempts", "backoff_expiration", "events", "initial_attempt_timestamp", "pod_info", "seq",
                 "timestamp", "unschedulable_plugins")

    def __init__(self, pod_info: PodInfo, timestamp: float, seq: int) -> None:
        self.pod_info = pod_info
        self.timestamp = timestamp  # when it (re-)entered the queue; FIFO order within a priority
        self.initial_attempt_timestamp: float | None = None
        self.attempts = 0
        self.unschedulable_plugins: set[str] = set()
        self.events: frozenset[str] = frozenset()  # what may help it, fixed while it is unschedulable
        self.backoff_expiration = 0.0
        self.seq = seq

    @property
    def uid(self) -> str:
        return self.pod_info.uid

    def __repr__(self) -> str:
        return f"QueuedPodInfo({self.pod_info.key}, attempts={self.attempts})"


# Which cluster events may help an unschedulable pod ("Node/Add", "Pod/Delete", ...; "*": any).
EventsOf = Callable[[QueuedPodInfo], frozenset[str]]
ANY_EVENT = frozenset(("*",))


def _any_event(qpi: QueuedPodInfo) -> frozenset[str]:
    return ANY_EVENT


class SchedulingQueue:
    def __init__(self, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 max_unschedulable: float = UNSCHEDULABLE_MAX_DURATION,
                 clock: Callable[[], float] = time.monotonic, events_of: EventsOf = _any_event) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self.clock = clock
        self.events_of = events_of
        self._seq = itertools.count()
        self._active: list[tuple[int, float, int, str]] = []
        self._active_pods: dict[str, QueuedPodInfo] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_pods: dict[str, QueuedPodInfo] = {}
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        # Unschedulable pods by the events that may help them, so an event touches only those.
        self._interested: dict[str, set[str]] = {}
        self._in_flight: dict[str, QueuedPodInfo] = {}
        self.scheduling_cycle = 0
        self.move_request_cycle = -1
        self._wakeup = asyncio.Event()
        self._closed = False
        # Nominated pods: uid -> (PodInfo, node) and node -> {uid: PodInfo}
        self._nominated: dict[str, str] = {}
        self._nominated_by_node: dict[str, dict[str, PodInfo]] = {}

    # ---- sizes, for tests and metrics

    def pending(self) -> dict[str, int]:
        return {"active": len(self._active_pods), "backoff": len(self._backoff_pods),
                "unschedulable": len(self.unschedulable)}

    def __contains__(self, uid: str) -> bool:
        return uid in self._active_pods or uid in self._backoff_pods or uid in self.unschedulable

    def __len__(self) -> int:
        return len(self._active_pods) + len(self._backoff_pods) + len(self.unschedulable)

    # ---- internal moves

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        qpi.seq = next(self._seq)
        self._active_pods[qpi.uid] = qpi
        heapq.heappush(self._active, (-qpi.pod_info.priority, qpi.timestamp, qpi.seq, qpi.uid))
        self._wakeup.set()

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        qpi.seq = next(self._seq)
        self._backoff_pods[qpi.uid] = qpi
        heapq.heappush(self._backoff, (qpi.backoff_expiration, qpi.seq, qpi.uid))

    def _take(self, uid: str) -> QueuedPodInfo | None:
        """Remove a pod from whichever sub-queue holds it (heap entries go stale and are skipped)."""
        return self._active_pods.pop(uid, None) or self._backoff_pods.pop(uid, None) or self._pop_unschedulable(uid)

    def _add_unschedulable(self, qpi: QueuedPodInfo) -> None:
        self.unschedulable[qpi.uid] = qpi
        qpi.events = self.events_of(qpi)
        for event in qpi.events:
            self._interested.setdefault(event, set()).add(qpi.uid)

    def _pop_unschedulable(self, uid: str) -> QueuedPodInfo | None:
        qpi = self.unschedulable.pop(uid, None)
        if qpi is not None:
            for event in qpi.events:
                uids = self._interested.get(event)
                if uids is not None:
                    uids.discard(uid)
                    if not uids:
                        del self._interested[event]
        return qpi

    def backoff_duration(self, attempts: int) -> float:
        duration = self.initial_backoff
        for _ in range(1, attempts):
            duration *= 2
            if duration > self.max_backoff:
                return self.max_backoff
        return min(duration, self.max_backoff)

    def _backing_off(self, qpi: QueuedPodInfo) -> bool:
        return qpi.backoff_expiration > self.clock()

    # ---- public API

    def add(self, pod_info: PodInfo) -> None:
        """A new pending pod, or a pending pod changed."""
        existing = self._take(pod_info.uid)
        if existing is not None:
            existing.pod_info = pod_info
            if existing.uid in self._in_flight:
                return
            if self._backing_off(existing):
                self._push_backoff(existing)
            else:
                self._push_active(existing)
            return
        if pod_info.uid in self._in_flight:
            self._in_flight[pod_info.uid].pod_info = pod_info
            return
        self._push_active(QueuedPodInfo(pod_info, self.clock(), next(self._seq)))

    def update(self, pod_info: PodInfo) -> None:
        self.add(pod_info)

    def delete(self, uid: str) -> None:
        self._take(uid)
        self._in_flight.pop(uid, None)
        self.delete_nominated(uid)

    async def pop(self) -> QueuedPodInfo:
        """The next pod to schedule; waits while none is ready."""
        while True:
            while self._active:
                _, _, seq, uid = heapq.heappop(self._active)
                qpi = self._active_pods.get(uid)
                if qpi is None or qpi.seq != seq:
                    continue  # stale heap entry
                del self._active_pods[uid]
                self.scheduling_cycle += 1
                qpi.attempts += 1
                if qpi.initial_attempt_timestamp is None:
                    qpi.initial_attempt_timestamp = self.clock()
                self._in_flight[uid] = qpi
                return qpi
            if self._closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()

    def pop_nowait(self) -> QueuedPodInfo | None:
        while self._active:
            _, _, seq, uid = heapq.heappop(self._active)
            qpi = self._active_pods.get(uid)
            if qpi is None or qpi.seq != seq:
                continue
            del self._active_pods[uid]
            self.scheduling_cycle += 1
            qpi.attempts += 1
            if qpi.initial_attempt_timestamp is None:
                qpi.initial_attempt_timestamp = self.clock()
            self._in_flight[uid] = qpi
            return qpi
        return None

    def in_flight(self, uid: str) -> bool:
        return uid in self._in_flight

    def done(self, uid: str) -> None:
        """The pod's cycle ended with success (it is bound or being bound)."""
        self._in_flight.pop(uid, None)

    def add_unschedulable(self, qpi: QueuedPodInfo, cycle: int, error: bool = False) -> None:
        """After a failed attempt: to back-off if an event may already have helped (or on errors),
        else to the unschedulable pods."""
        if self._in_flight.pop(qpi.uid, None) is None or qpi.uid in self:
            return  # deleted (or bound) while it was being scheduled
        now = self.clock()
        qpi.timestamp = now
        qpi.backoff_expiration = now + self.backoff_duration(qpi.attempts)
        if error or self.move_request_cycle >= cycle:
            self._push_backoff(qpi)
        else:
            self._add_unschedulable(qpi)

    def move_all_to_active_or_backoff(self, event: str) -> int:
        """A cluster event happened; move the unschedulable pods it may help. Returns how many."""
        moved = 0
        if self.unschedulable:
            uids = self._interested.get(event, set()) | self._interested.get("*", set())
            for uid in uids:
                qpi = self._pop_unschedulable(uid)
                if qpi is None:
                    continue
                if self._backing_off(qpi):
                    self._push_backoff(qpi)
                else:
                    self._push_active(qpi)
                moved += 1
        self.move_request_cycle = self.scheduling_cycle
        return moved

    def flush_backoff_completed(self) -> int:
        now = self.clock()
        moved = 0
        while self._backoff and self._backoff[0][0] <= now:
            _, seq, uid = heapq.heappop(self._backoff)
            qpi = self._backoff_pods.get(uid)
            if qpi is None or qpi.seq != seq:
                continue
            del self._backoff_pods[uid]
            self._push_active(qpi)
            moved += 1
        return moved

    def flush_unschedulable_leftover(self) -> int:
        now = self.clock()
        moved = 0
        for uid, qpi in list(self.unschedulable.items()):
            if now - qpi.timestamp >= self.max_unschedulable:
                self._pop_unschedulable(uid)
                if self._backing_off(qpi):
                    self._push_backoff(qpi)
                else:
                    self._push_active(qpi)
                moved += 1
        return moved

    async def run_flushers(self) -> None:
        """Periodic moves: back-off expiry every second, leftovers every 30 s."""
        last_leftover = self.clock()
        while not self._closed:
            await asyncio.sleep(BACKOFF_FLUSH_INTERVAL)
            self.flush_backoff_completed()
            if self.clock() - last_leftover >= UNSCHEDULABLE_FLUSH_INTERVAL:
                last_leftover = self.clock()
                self.flush_unschedulable_leftover()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # ---- nominated pods

    def add_nominated(self, pod_info: PodInfo, node_name: str) -> None:
        self.delete_nominated(pod_info.uid)
        self._nominated[pod_info.uid] = node_name
        self._nominated_by_node.setdefault(node_name, {})[pod_info.uid] = pod_info

    def delete_nominated(self, uid: str) -> None:
        node = self._nominated.pop(uid, None)
        if node is not None:
            pods = self._nominated_by_node.get(node)
            if pods is not None:
                pods.pop(uid, None)
                if not pods:
                    del self._nominated_by_node[node]

    def nominated_pods(self, node_name: str) -> list[PodInfo]:
        pods = self._nominated_by_node.get(node_name)
        return list(pods.values()) if pods else []

    def has_nominated_pods(self) -> bool:
        return bool(self._nominated_by_node)
