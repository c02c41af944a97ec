"""Namespace: empty a Terminating namespace, then let it go.

Deleting a namespace only marks it Terminating (the API server keeps it while `spec.finalizers` holds
`kubernetes`). This controller deletes every namespaced object in it, of every built-in resource and every
custom resource, re-checks until nothing is left (pods wait for their grace period, objects for their own
finalizers), reporting progress in the namespace's status conditions as Kubernetes does
(NamespaceDeletionDiscoveryFailure, NamespaceDeletionContentFailure, NamespaceContentRemaining,
NamespaceFinalizersRemaining), and finally removes `kubernetes` through `namespaces/<name>/finalize`.
"""

from __future__ import annotations

import asyncio
import copy
import logging

from pinnace.api.kinds import registry
from pinnace.client import ApiError, ConnectionFailed, NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    format_time,
    is_being_deleted,
    name_of,
    set_condition,
    status_equal,
)

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
RETRY_SECONDS = 1.0  # content still going away (pods in their grace period): look again


def builtin_namespaced_resources() -> list[str]:
    # Events last: deleting the rest records more of them.
    return [r.name for r in registry().resources
            if r.namespaced and {"list", "delete"} <= set(r.verbs)
            and r.name not in ("v1/events", "events.k8s.io/v1/events")] + ["v1/events", "events.k8s.io/v1/events"]


class NamespaceController(BaseController):
    name = "namespace"

    def setup(self) -> None:
        self.namespaces = self.informer("v1/namespaces")
        self.namespaces.add_handler(on_add=self._event, on_update=lambda old, new: self._event(new))
        self.listing = asyncio.Semaphore(8)  # lists in flight at once, so one namespace cannot flood the server

    def _event(self, namespace: Object) -> None:
        if is_being_deleted(namespace):
            self.enqueue(namespace)

    async def _resources(self) -> tuple[list[str], list[str]]:
        """Every namespaced resource to empty, and the groups that could not be listed."""
        resources = builtin_namespaced_resources()
        failures: list[str] = []
        try:
            crds = await self.client.list("apiextensions.k8s.io/v1/customresourcedefinitions")
        except (ApiError, ConnectionFailed) as error:
            failures.append(f"apiextensions.k8s.io/v1: {error}")
            crds = {"items": []}
        for crd in crds.get("items") or ():
            spec = crd.get("spec") or {}
            if spec.get("scope") != "Namespaced":
                continue
            version = next((v["name"] for v in spec.get("versions") or () if v.get("served")), None)
            if version:
                resources.append(f"{spec['group']}/{version}/{spec['names']['plural']}")
        return resources, failures

    async def reconcile(self, key: str) -> None:
        namespace = self.namespaces.get(key)
        if namespace is None or not is_being_deleted(namespace):
            return
        if FINALIZER not in ((namespace.get("spec") or {}).get("finalizers") or ()):
            return
        resources, discovery_failures = await self._resources()
        remaining: dict[str, int] = {}
        finalizers_left: dict[str, int] = {}
        content_failures: list[str] = []
        listings = await asyncio.gather(*(self._list(resource, key) for resource in resources))
        for resource, (items, error) in zip(resources, listings, strict=True):
            if error is not None:
                content_failures.append(f"{resource}: {error}")
                continue
            if not items:
                continue
            remaining[resource.rpartition("/")[2]] = len(items)
            for item in items:
                for finalizer in (item.get("metadata") or {}).get("finalizers") or ():
                    finalizers_left[finalizer] = finalizers_left.get(finalizer, 0) + 1
                if is_being_deleted(item):
                    continue
                try:
                    await self.client.delete(resource, name_of(item), namespace=key, propagation_policy="Background")
                except NotFound:
                    pass
                except ApiError as error:
                    content_failures.append(f"{resource} {name_of(item)}: {error}")
        await self._report(namespace, discovery_failures, content_failures, remaining, finalizers_left)
        if remaining or content_failures or discovery_failures:
            self.enqueue_after(key, RETRY_SECONDS)
            return
        spec = copy.deepcopy(namespace.get("spec") or {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or () if f != FINALIZER]
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": key, "resourceVersion": namespace["metadata"].get("resourceVersion")},
                "spec": spec}
        try:
            await self.client.replace_subresource("v1/namespaces", key, "finalize", body)
        except NotFound:
            pass

    async def _list(self, resource: str, namespace: str) -> tuple[list[Object], ApiError | None]:
        """The resource's objects in the namespace; a resource this server does not serve has none."""
        async with self.listing:
            try:
                return (await self.client.list(resource, namespace=namespace)).get("items") or [], None
            except NotFound:
                return [], None
            except ApiError as error:
                if error.code in (404, 405):
                    return [], None
                return [], error

    async def _report(self, namespace: Object, discovery: list[str], content: list[str], remaining: dict[str, int],
                      finalizers: dict[str, int]) -> None:
        status = copy.deepcopy(namespace.get("status") or {})
        stamp = format_time()

        def condition(type_: str, failing: bool, reason_ok: str, reason_bad: str, message: str) -> None:
            set_condition(status, {"type": type_, "status": "True" if failing else "False",
                                   "reason": reason_bad if failing else reason_ok,
                                   "message": message if failing else "", "lastTransitionTime": stamp})

        condition("NamespaceDeletionDiscoveryFailure", bool(discovery), "ResourcesDiscovered", "DiscoveryFailed",
                  "Discovery failed for some groups: " + "; ".join(discovery))
        condition("NamespaceDeletionGroupVersionParsingFailure", False, "ParsedGroupVersions", "GroupVersionParsingFailed", "")
        condition("NamespaceDeletionContentFailure", bool(content), "ContentDeleted", "ContentDeletionFailed",
                  "Failed to delete all resource types: " + "; ".join(content))
        condition("NamespaceContentRemaining", bool(remaining), "ContentRemoved", "SomeResourcesRemain",
                  "Some resources are remaining: " + ", ".join(f"{r} has {n} resource instances"
                                                               for r, n in sorted(remaining.items())))
        condition("NamespaceFinalizersRemaining", bool(finalizers), "ContentHasNoFinalizers", "SomeFinalizersRemain",
                  "Some content in the namespace has finalizers remaining: " + ", ".join(
                      f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())))
        if status_equal(status, namespace.get("status")):
            return
        try:
            await self.client.patch("v1/namespaces", name_of(namespace), {"status": status}, patch_type="merge",
                                    subresource="status")
        except NotFound:
            pass
