"""The `kubernetes` Service's endpoints: every live API server of the cluster (the lease reconciler).

As Kubernetes' `--endpoint-reconciler-type=lease`: each API server keeps a Lease `kube-system/apiserver-<id>`
(label `apiserver.kubernetes.io/identity: kube-apiserver`), renewed every `renew_seconds`, recording the
address and port it serves on (annotation `pinnace.io/advertise-address`). Each server also rewrites the
`default/kubernetes` Endpoints and EndpointSlice to list the servers whose leases are fresh, so a server
that dies drops out within `lease_seconds`, and one that stops cleanly removes itself at once.

Where pinnace differs: Kubernetes keeps these records as bare etcd keys with TTLs (`/masterleases/<ip>`);
pinnace uses ordinary Lease objects, so `kubectl get leases -n kube-system` shows them, and the store
needs no TTL support. Freshness compares `renewTime` with this server's clock: keep the servers' clocks in
sync (NTP), as for every Lease in Kubernetes. Every server needs an address of its own (`--bind-address`,
else its first non-loopback IPv4 address), as in Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
from typing import Any

from pinnace.apiserver.errors import AlreadyExists, ApiError, NotFound
from pinnace.store import StoreError

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
ADDRESS_ANNOTATION = "pinnace.io/advertise-address"


def micro_time(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def live_addresses(leases: list[dict], now: datetime.datetime) -> list[tuple[str, int]]:
    """(ip, port) of every API server lease still fresh at `now`, sorted."""
    found = set()
    for lease in leases:
        meta = lease.get("metadata") or {}
        if (meta.get("labels") or {}).get(IDENTITY_LABEL) != "kube-apiserver":
            continue
        spec = lease.get("spec") or {}
        renewed = parse_micro_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or 0
        address = (meta.get("annotations") or {}).get(ADDRESS_ANNOTATION, "")
        host, _, port = address.rpartition(":")
        if renewed is None or not host or not port.isdigit():
            continue
        if renewed + datetime.timedelta(seconds=duration) >= now:
            found.add((host.strip("[]"), int(port)))
    return sorted(found)


def subsets_of(addresses: list[tuple[str, int]]) -> list[dict]:
    """Endpoints subsets: one per port, since servers on different ports cannot share one."""
    by_port: dict[int, list[str]] = {}
    for ip, port in addresses:
        by_port.setdefault(port, []).append(ip)
    return [
        {"addresses": [{"ip": ip} for ip in sorted(ips)], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
        for port, ips in sorted(by_port.items())
    ]


class EndpointLeaseReconciler:
    def __init__(self, server: Any, lease_seconds: int = 15, renew_seconds: float = 5.0) -> None:
        self.server = server
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.address = server.advertise_address()
        self.port = server.port
        # Named after the address only, as Kubernetes keys its master leases by IP: a server restarted on
        # another port replaces its old record instead of leaving it to expire.
        digest = hashlib.sha256(self.address.encode()).hexdigest()[:16]
        self.name = f"apiserver-{digest}"
        self.leases = server.kinds.by_resource("coordination.k8s.io/v1/leases")
        self.endpoints = server.kinds.by_resource("v1/endpoints")
        self.slices = server.kinds.by_resource("discovery.k8s.io/v1/endpointslices")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Renew once (so the Endpoints list this server before start() returns), then keep renewing."""
        await self.reconcile()
        self.task = asyncio.create_task(self._run(), name="apiserver endpoint leases")

    async def stop(self) -> None:
        """Stop renewing, drop this server's lease and take it out of the endpoints."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        try:
            with contextlib.suppress(NotFound):
                await self.server.registry.delete(self.leases, NAMESPACE, self.name, {})
            await self._write_endpoints(exclude_self=True)
        except (ApiError, StoreError, OSError) as error:
            log.warning("could not remove this API server from the kubernetes endpoints: %s", error)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                await self.reconcile()
            except (ApiError, StoreError) as error:
                log.warning("renewing the API server lease failed: %s", error)

    async def reconcile(self) -> None:
        await self._renew()
        await self._write_endpoints()

    async def _renew(self) -> None:
        registry = self.server.registry
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": NAMESPACE,
                         "labels": {IDENTITY_LABEL: "kube-apiserver"},
                         "annotations": {ADDRESS_ANNOTATION: f"{self.address}:{self.port}"}},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": self.lease_seconds,
                     "renewTime": micro_time(datetime.datetime.now(datetime.UTC))},
        }
        try:
            current = await registry.get(self.leases, NAMESPACE, self.name)
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                await registry.create(self.leases, NAMESPACE, lease)
                return
            current = await registry.get(self.leases, NAMESPACE, self.name)
        current["metadata"].setdefault("labels", {}).update(lease["metadata"]["labels"])
        current["metadata"].setdefault("annotations", {}).update(lease["metadata"]["annotations"])
        current["spec"] = {**(current.get("spec") or {}), **lease["spec"]}
        await registry.update(self.leases, NAMESPACE, self.name, current)

    async def _write_endpoints(self, exclude_self: bool = False) -> None:
        now = datetime.datetime.now(datetime.UTC)
        page = await self.server.registry.list_page(self.leases, NAMESPACE, revision=None, limit=0, continue_token=None)
        addresses = live_addresses(page.items, now)
        if exclude_self:
            addresses = [a for a in addresses if a != (self.address, self.port)]
        elif (self.address, self.port) not in addresses:
            addresses = sorted([*addresses, (self.address, self.port)])
        subsets = subsets_of(addresses)
        await self._update(self.endpoints, "kubernetes", lambda obj: _set(obj, "subsets", subsets),
                           {"metadata": {"name": "kubernetes", "namespace": "default",
                                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                            "subsets": subsets})
        endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in sorted({ip for ip, _ in addresses})]
        # An EndpointSlice has one port list: the common case of one port for every server.
        ports = [{"name": "https", "port": port, "protocol": "TCP"} for port in sorted({p for _, p in addresses})[:1]]

        def edit_slice(obj: dict) -> bool:
            changed = _set(obj, "endpoints", endpoints)
            return _set(obj, "ports", ports) or changed

        await self._update(self.slices, "kubernetes", edit_slice,
                           {"metadata": {"name": "kubernetes", "namespace": "default",
                                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                                    "endpointslice.kubernetes.io/managed-by": "kube-apiserver"}},
                            "addressType": "IPv4", "endpoints": endpoints, "ports": ports})

    async def _update(self, info: Any, name: str, edit: Any, fresh: dict) -> None:
        registry = self.server.registry
        for _ in range(3):  # other servers write the same objects: retry a lost compare-and-swap
            try:
                current = await registry.get(info, "default", name)
            except NotFound:
                with contextlib.suppress(AlreadyExists):
                    await registry.create(info, "default", fresh)
                    return
                continue
            if not edit(current):
                return
            try:
                await registry.update(info, "default", name, current)
                return
            except ApiError as error:
                if error.code != 409:
                    raise


def _set(obj: dict, field: str, value: Any) -> bool:
    if obj.get(field) == value:
        return False
    obj[field] = value
    return True
