"""The shape of every pinnace controller: informers -> work queue -> idempotent reconcile(key) -> N workers.

A subclass names itself, gets its informers in `setup()` and enqueues keys from their handlers, and
implements `reconcile(key)`: read the desired state from the informer cache, make one step toward it,
return. Raising retries the key with per-key exponential back-off (5 ms .. 1,000 s); returning normally
resets its back-off. The work queue guarantees one worker per key at a time and folds repeated
enqueues of a key into one reconcile.

A failure is logged once (as a warning, with the traceback only for unexpected errors) and then at debug
level while the key keeps failing the same way, so a key stuck in back-off does not flood the log; a new
error message, or recovery, is logged again.

    class ReplicaSetController(Controller):
        name = "replicaset"

        def setup(self) -> None:
            self.replicasets = self.informer("apps/v1/replicasets")
            self.replicasets.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)
            self.pods = self.informer("v1/pods")
            owner = lambda pod: self.enqueue_owner(pod, "ReplicaSet")  # noqa: E731
            self.pods.add_handler(owner, lambda old, new: owner(new), owner)

        async def reconcile(self, key: str) -> None: ...

A subclass may instead list resources in `watches`: the default `setup()` then creates an informer per
resource, stored as an attribute named after the plural ("apps/v1/replicasets" -> self.replicasets), and
enqueues the objects of the first one on every add, update and delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from pinnace.client.errors import ApiError, Conflict
from pinnace.client.events import EventRecorder
from pinnace.client.informer import Informer, InformerFactory, meta_namespace_key
from pinnace.client.rest import Client, ConnectionFailed, parse_resource
from pinnace.client.workqueue import WorkQueue


class Controller:
    name = "controller"
    watches: tuple[str, ...] = ()
    # Seconds to wait for this controller's informers to sync before starting workers anyway (None: forever).
    sync_timeout: float | None = None

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder | None = None,
                 workers: int = 2) -> None:
        self.client = client
        self.factory = factory
        self.recorder = recorder
        self.workers = workers
        self.queue = WorkQueue(name=self.name)
        self.log = logging.getLogger(f"pinnace.controllers.{self.name}")
        self._informers: list[Informer] = []
        self._set_up = False
        self._failing: dict[str, str] = {}

    # -- wiring --------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Get informers and add handlers that enqueue keys. The default wires `watches` (see module doc)."""
        for index, resource in enumerate(self.watches):
            informer = self.informer(resource)
            attribute = parse_resource(resource)[2]
            if getattr(self, attribute, None) is None:
                setattr(self, attribute, informer)
            if index == 0:
                informer.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)

    def informer(self, resource: str, namespace: str | None = None, label_selector: str | Mapping[str, str] | None = None,
                 field_selector: str | Mapping[str, str] | None = None, **kwargs: Any) -> Informer:
        """A shared informer from the factory, remembered so run() waits for it to sync."""
        informer = self.factory.informer(resource, namespace, label_selector, field_selector, **kwargs)
        if informer not in self._informers:
            self._informers.append(informer)
        return informer

    def ensure_setup(self) -> None:
        if not self._set_up:
            self._set_up = True
            self.setup()

    def enqueue(self, obj_or_key: Mapping[str, Any] | str) -> None:
        """Queue an object's key (or a key). Usable directly as an on_add / on_delete handler."""
        self.queue.add(obj_or_key if isinstance(obj_or_key, str) else meta_namespace_key(obj_or_key))

    def enqueue_after(self, obj_or_key: Mapping[str, Any] | str, delay: float) -> None:
        self.queue.add_after(obj_or_key if isinstance(obj_or_key, str) else meta_namespace_key(obj_or_key), delay)

    def enqueue_owner(self, obj: Mapping[str, Any], kind: str) -> None:
        """Queue the key of `obj`'s controlling owner when that owner is of `kind` (same namespace)."""
        for ref in obj.get("metadata", {}).get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == kind:
                namespace = obj["metadata"].get("namespace")
                self.queue.add(f"{namespace}/{ref['name']}" if namespace else ref["name"])

    # -- running -------------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        """Converge the object named by `key` one step; raise to retry with back-off."""
        raise NotImplementedError

    async def run(self) -> None:
        """Start informers, wait for their caches, then run `workers` workers until cancelled."""
        self.ensure_setup()
        await self.factory.start()
        waiting_for = self._informers or self.factory.informers
        try:
            await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in waiting_for)), self.sync_timeout)
        except TimeoutError:
            unsynced = [i.resource for i in waiting_for if not i.has_synced]
            self.log.warning("%s: caches not synced after %ss (%s); starting anyway", self.name, self.sync_timeout,
                             ", ".join(unsynced))
        self.log.info("%s: caches synced; starting %d workers", self.name, self.workers)
        tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.queue.shutdown()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.process(key)  # type: ignore[arg-type]
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        """Reconcile one key and handle the outcome (forget on success, back-off on failure)."""
        try:
            await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the one place a reconcile failure is handled: log once, retry later
            self.queue.add_rate_limited(key)
            self._log_failure(key, error)
        else:
            self.queue.forget(key)
            if self._failing.pop(key, None) is not None:
                self.log.info("%s: %s reconciled after earlier failures", self.name, key)

    def _log_failure(self, key: str, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        if self._failing.get(key) == text:
            self.log.debug("%s: %s failed again (%s); retry %d", self.name, key, text, self.queue.num_requeues(key))
            return
        self._failing[key] = text
        if isinstance(error, Conflict):
            # Optimistic concurrency: the cache was behind; the retry will read the newer object.
            self.log.debug("%s: %s: %s; retrying", self.name, key, text)
        elif isinstance(error, (ApiError, ConnectionFailed)):
            self.log.warning("%s: reconciling %s failed: %s; will retry with back-off", self.name, key, text)
        else:
            self.log.warning("%s: reconciling %s failed; will retry with back-off", self.name, key, exc_info=error)
