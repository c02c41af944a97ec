"""ReplicaSet and ReplicationController: keep `spec.replicas` pods matching the selector.

One implementation serves both kinds (Kubernetes does the same: the RC manager is the ReplicaSet manager
with a different kind and the map form of the selector). Per reconcile:
1. Claim pods: adopt orphans that match the selector, release owned pods that stopped matching.
2. If the expectations from the last pass are met, create or delete the difference. Creates go in
   slow-start batches (1, 2, 4, ...) and stop at the first failing batch; surplus pods are deleted in
   Kubernetes' order (unscheduled, pending, not ready, ready for less time, more restarts, newest).
3. Write status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (minReadySeconds),
   observedGeneration and the ReplicaFailure condition when creates or deletes fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pinnace.client import ApiError, NotFound
from pinnace.controllers.base import BaseController, api_group, namespace_terminating
from pinnace.controllers.expectations import Expectations
from pinnace.controllers.objects import (
    Object,
    controller_ref,
    format_time,
    generation_of,
    is_being_deleted,
    key_of,
    labels_of,
    namespace_of,
    remove_condition,
    selector_is_empty,
    selector_matches,
    set_condition,
    status_equal,
    uid_of,
)
from pinnace.controllers.pods import (
    is_active,
    is_available,
    is_ready,
    pod_from_template,
    rank_for_deletion,
    seconds_until_available,
    slow_start_batches,
)

log = logging.getLogger(__name__)

# Kubernetes' burstReplicas: at most this many creates or deletes per reconcile.
BURST_REPLICAS = 500
MAX_IN_FLIGHT = 64


class ReplicaSetController(BaseController):
    """Keeps `spec.replicas` pods matching each ReplicaSet's selector (see Kubernetes' ReplicaSet)."""

    name = "replicaset"
    resource = "apps/v1/replicasets"
    kind = "ReplicaSet"
    api_version = "apps/v1"

    def setup(self) -> None:
        self.expectations = Expectations()
        # Requests in flight at once, across this controller's workers: each needs its own HTTP/1.1
        # connection, and opening hundreds of TLS connections at once costs more than it saves.
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.owners = self.indexed_informer(self.resource)
        self.pods = self.pod_informer()
        self.owners.add_handler(on_add=self._owner_event, on_update=lambda old, new: self._owner_event(new),
                                on_delete=self._owner_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # --- event handlers: cheap, they only enqueue keys ----------------------------------------------

    def _owner_event(self, owner: Object) -> None:
        self.enqueue(key_of(owner))

    def _owner_deleted(self, owner: Object) -> None:
        self.expectations.forget(key_of(owner))
        self.enqueue(key_of(owner))

    def _owner_key(self, pod: Mapping[str, Any]) -> str | None:
        return self.owner_key(pod, self.kind, api_group(self.api_version))

    def _enqueue_matching_owners(self, pod: Mapping[str, Any]) -> None:
        for owner in self.owners.by_index("namespace", namespace_of(pod) or ""):
            selector = owner["spec"].get("selector")
            if not selector_is_empty(selector) and selector_matches(selector, labels_of(pod)):
                self.enqueue(key_of(owner))

    def _pod_added(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue(key)
        elif controller_ref(pod) is None:
            self._enqueue_matching_owners(pod)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = self._owner_key(new)
        if is_being_deleted(new) and not is_being_deleted(old) and key is not None:
            self.expectations.deletion_observed(key, uid_of(new))
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self.enqueue(old_key)
        if key is not None:
            self.enqueue(key)
        elif controller_ref(new) is None and (labels_of(old) != labels_of(new) or controller_ref(old) is not None):
            self._enqueue_matching_owners(new)

    def _pod_deleted(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, uid_of(pod))
            self.enqueue(key)

    # --- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        owner = self.owners.get(key)
        if owner is None:
            self.expectations.forget(key)
            return
        pods = await self.claim_pods(owner)
        active = [p for p in pods if is_active(p)]
        failure: ApiError | None = None
        if self.expectations.satisfied(key) and not is_being_deleted(owner):
            failure = await self.manage_replicas(owner, active)
        await self.update_status(owner, active, str(failure) if failure else None)
        if failure:
            raise failure  # retried with back-off; the status already tells the user

    async def claim_pods(self, owner: Object) -> list[Object]:
        """The pods this owner controls after adopting matching orphans and releasing strays."""
        candidates = self.pods.by_index("namespace", namespace_of(owner) or "")
        return await self.claim(owner, candidates, "v1/pods", owner["spec"].get("selector"))

    async def manage_replicas(self, owner: Object, active: list[Object]) -> ApiError | None:
        """Create or delete the difference; returns the first failure, if any."""
        key = key_of(owner)
        desired = owner["spec"].get("replicas", 1)
        diff = len(active) - desired
        if diff < 0:
            return await self._create(owner, key, min(-diff, BURST_REPLICAS))
        if diff > 0:
            return await self._delete(owner, key, rank_for_deletion(active)[: min(diff, BURST_REPLICAS)])
        return None

    def _new_pod(self, owner: Object) -> Object:
        return pod_from_template(owner["spec"].get("template") or {}, owner, namespace=namespace_of(owner) or "default")

    async def _create(self, owner: Object, key: str, count: int) -> ApiError | None:
        self.expectations.expect_creations(key, count)
        created = 0
        failure: ApiError | None = None
        for batch in slow_start_batches(count):
            results = await asyncio.gather(*(self._create_one(owner) for _ in range(batch)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException) and not namespace_terminating(r)]
            for result in results:
                if isinstance(result, dict):
                    self.record(owner, "Normal", "SuccessfulCreate", f"Created pod: {result['metadata']['name']}")
            created += sum(1 for r in results if isinstance(r, dict))
            if errors:
                for error in errors:
                    if not isinstance(error, ApiError):
                        raise error
                failure = errors[0]  # type: ignore[assignment]
                self.record(owner, "Warning", "FailedCreate", f"Error creating: {failure}")
                break
        skipped = count - created
        if skipped:
            # Creates that failed or never ran will produce no events: stop waiting for them.
            self.expectations.creation_observed(key, skipped)
        return failure

    async def _create_one(self, owner: Object) -> Object:
        async with self.in_flight:
            return await self.client.create("v1/pods", self._new_pod(owner), namespace=namespace_of(owner))

    async def _delete(self, owner: Object, key: str, victims: list[Object]) -> ApiError | None:
        self.expectations.expect_deletions(key, [uid_of(p) for p in victims])
        results = await asyncio.gather(
            *(self._delete_one(p) for p in victims),
            return_exceptions=True)
        failure = None
        for pod, result in zip(victims, results, strict=True):
            if isinstance(result, NotFound):
                self.expectations.deletion_observed(key, uid_of(pod))
            elif isinstance(result, ApiError):
                self.expectations.deletion_observed(key, uid_of(pod))
                failure = result
                self.record(owner, "Warning", "FailedDelete", f"Error deleting: {failure}")
            elif isinstance(result, BaseException):
                raise result
            else:
                self.record(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
        return failure

    async def _delete_one(self, pod: Object) -> Object:
        async with self.in_flight:
            return await self.client.delete("v1/pods", pod["metadata"]["name"], namespace=namespace_of(pod),
                                            preconditions={"uid": uid_of(pod)})

    async def update_status(self, owner: Object, active: list[Object], failure: str | None) -> None:
        spec = owner["spec"]
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        old = owner.get("status") or {}
        status: Object = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active
                                        if all(labels_of(p).get(k) == v for k, v in template_labels.items())),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": sum(1 for p in active if is_available(p, min_ready)),
            "observedGeneration": generation_of(owner),
            "conditions": [dict(c) for c in old.get("conditions") or ()],
        }
        if failure:
            reason = "FailedCreate" if len(active) < spec.get("replicas", 1) else "FailedDelete"
            set_condition(status, {"type": "ReplicaFailure", "status": "True", "reason": reason,
                                   "message": failure, "lastTransitionTime": format_time()})
        elif not self.expectations.satisfied(key_of(owner)):
            pass  # keep what we reported until the outcome of the last writes is known
        else:
            remove_condition(status, "ReplicaFailure")
        if not status["conditions"]:
            del status["conditions"]
        if min_ready:
            waits = [w for p in active if (w := seconds_until_available(p, min_ready)) is not None]
            if waits:
                self.enqueue_after(key_of(owner), min(waits) + 0.05)
        if status_equal(status, old):
            return
        try:
            await self.client.patch(self.resource, owner["metadata"]["name"],
                                    {"status": {**status, "conditions": status.get("conditions")}},
                                    namespace=namespace_of(owner), patch_type="merge", subresource="status")
        except NotFound:
            pass


class ReplicationControllerController(ReplicaSetController):
    """The same loop for the core/v1 ReplicationController (its selector is a plain label map)."""

    name = "replicationcontroller"
    resource = "v1/replicationcontrollers"
    kind = "ReplicationController"
    api_version = "v1"
