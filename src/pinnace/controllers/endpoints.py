"""Endpoints and EndpointSlices: the pods behind each Service with a selector.

Two controllers with the same triggers: a Service change (its selector, ports, publishNotReadyAddresses)
re-computes that Service; a pod change re-computes every Service in the namespace whose selector matches
the pod before or after the change, which is how endpoints follow a selector switch or a pod turning ready
within one event. Services without a selector are the user's (endpoints pointing outside the cluster) and
are never touched, which also leaves the `kubernetes` Service's endpoints to the API server.
What goes in, and how slices are packed, is in `pinnace.controllers.endpoint_math`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from pinnace.client import AlreadyExists, Conflict, NotFound
from pinnace.controllers import endpoint_math
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    is_being_deleted,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    owner_reference,
    selector_matches,
    split_key,
    uid_of,
)

log = logging.getLogger(__name__)

WRITE_TRACKING_SECONDS = 5.0


def has_selector(service: Mapping[str, Any]) -> bool:
    """Whether the Service's endpoints are ours: it selects pods (ExternalName Services never do)."""
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


class _ServicePodsController(BaseController):
    """Shared wiring: services and pods in, service keys out."""

    def setup(self) -> None:
        self.services = self.indexed_informer("v1/services")
        self.namespaces = self.informer("v1/namespaces")
        self.pods = self.pod_informer()
        self.services.add_handler(on_add=self._service_event, on_update=lambda old, new: self._service_event(new),
                                  on_delete=self._service_event)
        self.pods.add_handler(on_add=self._pod_event, on_update=self._pod_updated, on_delete=self._pod_event)

    def _service_event(self, service: Object) -> None:
        self.enqueue(key_of(service))

    def _services_for(self, pod: Mapping[str, Any]) -> set[str]:
        labels = labels_of(pod)
        return {key_of(s) for s in self.services.by_index("namespace", namespace_of(pod) or "")
                if has_selector(s) and selector_matches(s["spec"]["selector"], labels)}

    def _pod_event(self, pod: Object) -> None:
        for key in self._services_for(pod):
            self.enqueue(key)

    def _pod_updated(self, old: Object, new: Object) -> None:
        if old.get("status") == new.get("status") and labels_of(old) == labels_of(new) and (
                is_being_deleted(old) == is_being_deleted(new)):
            return  # nothing endpoints depend on changed
        for key in self._services_for(old) | self._services_for(new):
            self.enqueue(key)

    def selected_pods(self, service: Object) -> list[Object]:
        selector = service["spec"]["selector"]
        return [p for p in self.pods.by_index("namespace", namespace_of(service) or "")
                if selector_matches(selector, labels_of(p))]


class EndpointsController(_ServicePodsController):
    """Keeps a core/v1 Endpoints object per Service with a selector."""

    name = "endpoints"

    def setup(self) -> None:
        super().setup()
        self.endpoints = self.informer("v1/endpoints")
        self.endpoints.add_handler(on_delete=self._service_event_for_endpoints)

    def _service_event_for_endpoints(self, endpoints: Object) -> None:
        self.enqueue(key_of(endpoints))  # someone deleted ours: re-create it

    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        service = self.services.get(key)
        current = self.endpoints.get(key)
        if service is None:
            # The Service is gone: its Endpoints go too (they carry no owner reference, as in Kubernetes).
            if current is not None:
                try:
                    await self.client.delete("v1/endpoints", name, namespace=namespace)
                except NotFound:
                    pass
            return
        if not has_selector(service):
            return
        subsets = endpoint_math.endpoints_subsets(service, self.selected_pods(service))
        labels = dict(labels_of(service))
        if (service["spec"].get("clusterIP") or "") == "None":
            labels[endpoint_math.HEADLESS_LABEL] = ""
        if current is not None and (current.get("subsets") or []) == subsets and labels_of(current) == labels:
            return
        body: Object = {"apiVersion": "v1", "kind": "Endpoints",
                        "metadata": {"name": name, "namespace": namespace, "labels": labels},
                        "subsets": subsets}
        try:
            if current is None:
                if namespace_terminating_in(self, namespace):
                    return
                await self.client.create("v1/endpoints", body, namespace=namespace)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                body["metadata"]["annotations"] = current["metadata"].get("annotations")
                await self.client.update("v1/endpoints", body, namespace=namespace)
        except AlreadyExists:
            # Created behind our cache's back; read it fresh next time.
            current = await self.client.get("v1/endpoints", name, namespace=namespace)
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            await self.client.update("v1/endpoints", body, namespace=namespace)


class EndpointSliceController(_ServicePodsController):
    """Keeps discovery.k8s.io/v1 EndpointSlices per Service with a selector (at most 100 endpoints each)."""

    name = "endpointslice"
    resource = "discovery.k8s.io/v1/endpointslices"

    def setup(self) -> None:
        super().setup()
        self.slices = self.informer(self.resource)
        self.slices.add_index("service", _slice_service_index)
        self.slices.add_handler(on_delete=self._slice_deleted)
        # Slices we wrote, per Service: {slice name: (resourceVersion written, monotonic time)}. Until the
        # cache holds them, a pass would see stale slices and create duplicates (Kubernetes keeps the same
        # record, its EndpointSliceTracker). Entries expire, in case an object is gone before we see it.
        self.written: dict[str, dict[str, tuple[int, float]]] = {}

    def _cache_behind(self, key: str) -> bool:
        written = self.written.get(key)
        if not written:
            return False
        namespace = split_key(key)[0]
        now = time.monotonic()
        for name, (version, when) in list(written.items()):
            cached = self.slices.get(f"{namespace}/{name}")
            current = int((cached or {}).get("metadata", {}).get("resourceVersion") or 0)
            if current >= version or now - when > WRITE_TRACKING_SECONDS:
                del written[name]
        return bool(written)

    def _wrote(self, key: str, slice_: Object) -> None:
        version = int(slice_["metadata"].get("resourceVersion") or 0)
        self.written.setdefault(key, {})[name_of(slice_)] = (version, time.monotonic())

    def _slice_deleted(self, slice_: Object) -> None:
        service = labels_of(slice_).get(endpoint_math.SERVICE_NAME_LABEL)
        if service:
            self.enqueue(f"{namespace_of(slice_)}/{service}")

    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        service = self.services.get(key)
        if self._cache_behind(key):
            self.enqueue_after(key, 0.02)  # our last writes are not in the cache yet
            return
        existing = [s for s in self.slices.by_index("service", key) if not is_being_deleted(s)]
        if service is None:
            # Ours go with the Service (the garbage collector would too, through the owner reference).
            for slice_ in existing:
                await self._delete(slice_)
            self.written.pop(key, None)
            return
        if not has_selector(service):
            return
        existing = [s for s in existing if _owned_by(s, service)]
        desired = endpoint_math.desired_slice_endpoints(service, self.selected_pods(service))
        updates, creates, deletes = endpoint_math.plan_slices(desired, existing)
        if not desired and not existing:
            creates = [("IPv4", (), [])]  # a placeholder, so clients see the Service has no endpoints
        elif not desired and existing:
            # Keep one empty slice rather than none.
            keep, deletes = existing[0], [s for s in existing[1:]]
            updates = [(keep, [])] if keep.get("endpoints") else []
        labels = {**labels_of(service), endpoint_math.SERVICE_NAME_LABEL: name,
                  endpoint_math.MANAGED_BY_LABEL: endpoint_math.MANAGED_BY}
        for slice_, endpoints in updates:
            body = dict(slice_)
            body["endpoints"] = endpoints
            body["metadata"] = {**slice_["metadata"], "labels": labels}
            try:
                self._wrote(key, await self.client.update(self.resource, body, namespace=namespace))
            except NotFound:
                pass
            except Conflict:
                self.enqueue(key)  # our cache was behind; the next pass sees the current slice
        for address_type, ports, endpoints in creates:
            body = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": f"{name}-", "namespace": namespace, "labels": labels,
                             "ownerReferences": [owner_reference(service)]},
                "addressType": address_type,
                "endpoints": endpoints,
                "ports": endpoint_math.slice_ports(ports) if ports else
                endpoint_math.slice_ports(_service_ports(service)),
            }
            if namespace_terminating_in(self, namespace):
                return
            self._wrote(key, await self.client.create(self.resource, body, namespace=namespace))
        for slice_ in deletes:
            await self._delete(slice_)

    async def _delete(self, slice_: Object) -> None:
        try:
            await self.client.delete(self.resource, name_of(slice_), namespace=namespace_of(slice_))
        except NotFound:
            pass


def namespace_terminating_in(controller: BaseController, namespace: str | None) -> bool:
    """New objects in a Terminating namespace are refused; the Service itself is about to go."""
    ns = controller.namespaces.get(namespace or "")
    return ns is not None and is_being_deleted(ns)


def _service_ports(service: Mapping[str, Any]) -> endpoint_math.PortKey:
    # For an empty slice: the Service ports with numeric targets (named ones resolve per pod).
    ports = []
    for port in (service.get("spec") or {}).get("ports") or ():
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, int):
            ports.append((port.get("name") or "", target, port.get("protocol") or "TCP", port.get("appProtocol")))
    return tuple(ports)


def _slice_service_index(slice_: Mapping[str, Any]) -> list[str]:
    labels = labels_of(slice_)
    if labels.get(endpoint_math.MANAGED_BY_LABEL) != endpoint_math.MANAGED_BY:
        return []  # slices someone else manages (mirrored, user-made) are not ours to change
    service = labels.get(endpoint_math.SERVICE_NAME_LABEL)
    return [f"{namespace_of(slice_)}/{service}"] if service else []


def _owned_by(slice_: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    refs = (slice_.get("metadata") or {}).get("ownerReferences") or ()
    return not refs or any(r.get("uid") == uid_of(service) for r in refs)
