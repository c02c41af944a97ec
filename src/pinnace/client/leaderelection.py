"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.

Candidates read the Lease every `retry_period`. The holder renews it (writes `renewTime`) every
`retry_period`; a candidate may take the Lease over only when the holder has not changed the record for
`leaseDurationSeconds`, measured on the candidate's own monotonic clock from the moment it *observed* the
last change (never by comparing timestamps written by another machine, so clock skew does not matter).
Writes use the Lease's resourceVersion, so of two candidates racing for an expired Lease only one wins.

Safety: a leader that cannot renew within `renew_deadline` (counted from the start of its last successful
renewal) stops leading: its work task is cancelled and awaited before `run()` tries to lead again. Because
renew_deadline < lease_duration, a leader cut off from the API server stops before any other candidate
can consider the Lease expired. Defaults are Kubernetes' (15 s, 10 s, 2 s).

    elector = LeaderElector(client, "pinnace-scheduler", namespace="kube-system")
    await elector.run(scheduler.run)      # runs scheduler.run() only while leading; until cancelled

On cancellation the leader releases the Lease (empty holder), so a successor starts at once instead of
waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pinnace.client.clock import SYSTEM_CLOCK, Clock
from pinnace.client.errors import AlreadyExists, ApiError, Conflict, NotFound
from pinnace.client.rest import Client, ConnectionFailed

log = logging.getLogger("pinnace.client.leaderelection")

LEASES = "coordination.k8s.io/v1/leases"
_callback_tasks: set[asyncio.Future[Any]] = set()


def micro_time(moment: datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        client: Client,
        name: str,
        namespace: str = "kube-system",
        identity: str | None = None,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        on_started_leading: Callable[[], Any] | None = None,
        on_stopped_leading: Callable[[], Any] | None = None,
        on_new_leader: Callable[[str], Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.clock = clock
        self.leader: str | None = None  # the holder identity last observed
        self._is_leader = False
        self._lease: dict[str, Any] | None = None
        self._observed_record: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew_started = 0.0

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    async def run(self, leading: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Campaign, lead (running `leading()` as a task), and campaign again after losing, until cancelled.

        If `leading()` returns or raises, the lease is released and run() returns (or re-raises).
        """
        try:
            while True:
                await self._acquire()
                outcome = await self._lead(leading)
                if outcome is not None:
                    await self._release()
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return
        except asyncio.CancelledError:
            if self._is_leader or self._holds_lease():
                await asyncio.shield(self._release())
            raise

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            await self.clock.sleep(self.retry_period * (1.0 + 0.2 * random.random()))

    async def _lead(self, leading: Callable[[], Awaitable[Any]] | None) -> object | None:
        """Lead until the lease is lost (returns None) or `leading()` ends (returns its outcome)."""
        self._is_leader = True
        log.info("%s: %s became leader of %s/%s", self.name, self.identity, self.namespace, self.name)
        _call(self.on_started_leading)
        task = asyncio.ensure_future(leading()) if leading is not None else None
        try:
            while True:
                renewal = asyncio.ensure_future(self._renew_within_deadline())
                waiters: set[asyncio.Future[Any]] = {renewal} if task is None else {renewal, task}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if task is not None and task.done():
                    renewal.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewal
                    if task.cancelled():
                        raise asyncio.CancelledError
                    return task.exception() or True
                if not renewal.result():
                    log.warning("%s: %s lost the lease; stopping its work", self.name, self.identity)
                    return None
                await self.clock.sleep(self.retry_period)
        finally:
            # Stop the work before anyone else may lead: cancel and wait for it to finish.
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._is_leader = False
            _call(self.on_stopped_leading)

    async def _renew_within_deadline(self) -> bool:
        """Renew, retrying every retry_period, until success or the renew deadline passes."""
        deadline = self._last_renew_started + self.renew_deadline
        while True:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    if await self._try_acquire_or_renew():
                        return True
            except TimeoutError:
                return False
            if self.leader not in (None, "", self.identity):
                return False  # someone else holds it: we are certainly not the leader any more
            await self.clock.sleep(min(self.retry_period, max(0.0, deadline - self.clock.now())))

    def _holds_lease(self) -> bool:
        return self._lease is not None and (self._lease.get("spec") or {}).get("holderIdentity") == self.identity

    async def _try_acquire_or_renew(self) -> bool:
        started = self.clock.now()
        now = micro_time()
        duration = max(1, math.ceil(self.lease_duration))
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": duration, "acquireTime": now,
                         "renewTime": now, "leaseTransitions": 0},
            }
            try:
                self._lease = await self.client.create(LEASES, body, self.namespace)
            except (AlreadyExists, Conflict):
                return False
            except (ApiError, ConnectionFailed) as error:
                log.warning("%s: creating lease failed: %s", self.name, error)
                return False
            self._observe(self._lease)
            self._last_renew_started = started
            return True
        except (ApiError, ConnectionFailed) as error:
            log.debug("%s: reading lease failed: %s", self.name, error)
            return False
        self._lease = lease
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record_duration = spec.get("leaseDurationSeconds") or duration
        if holder and holder != self.identity and self._observed_at + record_duration > self.clock.now():
            return False  # held by another, and not expired as far as we have seen
        new_spec = dict(spec)
        new_spec.update(holderIdentity=self.identity, leaseDurationSeconds=duration, renewTime=now)
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = dict(lease)
        body["spec"] = new_spec
        try:
            self._lease = await self.client.update(LEASES, body, self.namespace)
        except (ApiError, ConnectionFailed) as error:
            log.debug("%s: writing lease failed: %s", self.name, error)
            return False
        self._observe(self._lease)
        self._last_renew_started = started
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
                  spec.get("leaseTransitions"), spec.get("leaseDurationSeconds"))
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = self.clock.now()
        holder = spec.get("holderIdentity") or None
        if holder != self.leader:
            self.leader = holder
            if holder:
                _call(self.on_new_leader, holder)

    async def _release(self) -> None:
        if not self.release_on_cancel or not self._holds_lease() or self._lease is None:
            return
        try:
            async with asyncio.timeout(self.retry_period * 2):
                lease = self._lease
                for _ in range(3):
                    now = micro_time()
                    body = dict(lease)
                    body["spec"] = {**(lease.get("spec") or {}), "holderIdentity": None, "leaseDurationSeconds": 1,
                                    "renewTime": now, "acquireTime": now}
                    try:
                        self._lease = await self.client.update(LEASES, body, self.namespace)
                        log.info("%s: %s released the lease", self.name, self.identity)
                        return
                    except Conflict:
                        # A renewal interrupted by the cancellation may have landed after all: re-read.
                        lease = await self.client.get(LEASES, self.name, self.namespace)
                        if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                            return
        except (ApiError, ConnectionFailed, TimeoutError) as error:
            log.debug("%s: releasing lease failed: %s", self.name, error)


def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        result = callback(*args)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            _callback_tasks.add(task)  # hold a reference until it finishes
            task.add_done_callback(_callback_tasks.discard)
    except Exception:  # a callback's bug must not break the election protocol
        log.exception("leader election callback %r failed", callback)
