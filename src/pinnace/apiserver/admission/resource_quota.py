"""ResourceQuota: creates that would take a namespace over a quota are refused with 403.

Usage is counted from the namespace's objects at admission time (pods that finished do not count):
`pods`, `services`, `configmaps`, `secrets`, `persistentvolumeclaims`, `replicationcontrollers`,
`resourcequotas`, `services.nodeports`, `services.loadbalancers`, `count/<resource>[.<group>]`,
`requests.cpu`/`cpu`, `requests.memory`/`memory`, `limits.cpu`, `limits.memory`,
`requests.storage`. After each admitted create the quota's `status.hard`/`status.used` are written,
so `kubectl describe quota` shows them. Checks in one namespace run one at a time, so two racing
creates cannot both take the last unit (the namespace's
checks wait for the previous create to be stored). A pod without requests in a namespace whose quota limits
requests is refused, as Kubernetes does ("must specify requests.cpu").

Message, as Kubernetes: `exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden
from pinnace.apiserver.admission._objects import containers, format_quantity, list_objects, quantity
from pinnace.apiserver.errors import ApiError

log = logging.getLogger(__name__)

_COUNTED = {
    "pods": "v1/pods", "services": "v1/services", "configmaps": "v1/configmaps", "secrets": "v1/secrets",
    "persistentvolumeclaims": "v1/persistentvolumeclaims", "replicationcontrollers": "v1/replicationcontrollers",
    "resourcequotas": "v1/resourcequotas",
}
_COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")


def _active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _pod_usage(pod: dict) -> dict[str, Decimal]:
    """requests.cpu etc. of one pod: the sum over containers, or the largest init container if more."""
    usage: dict[str, Decimal] = {}
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            total = sum(((quantity(((c.get("resources") or {}).get(part) or {}).get(resource)) or Decimal(0))
                         for c in containers(pod, init=False)), Decimal(0))
            init = max((quantity(((c.get("resources") or {}).get(part) or {}).get(resource)) or Decimal(0)
                        for c in (pod.get("spec") or {}).get("initContainers") or () if isinstance(c, dict)),
                       default=Decimal(0))
            usage[f"{part}.{resource}"] = max(total, init)
    usage["cpu"], usage["memory"] = usage["requests.cpu"], usage["requests.memory"]
    return usage


def usage_of(resource_name: str, obj: dict) -> dict[str, Decimal]:
    """What one object of resource `resource_name` ("v1/pods") adds to each quota key."""
    usage: dict[str, Decimal] = {}
    group_plural = resource_name.split("/")
    plural = group_plural[-1]
    group = group_plural[0] if len(group_plural) == 3 else ""
    usage[f"count/{plural}.{group}" if group else f"count/{plural}"] = Decimal(1)
    if _COUNTED.get(plural) == resource_name:
        usage[plural] = Decimal(1)
    if resource_name == "v1/pods":
        usage.update(_pod_usage(obj))
    elif resource_name == "v1/services":
        kind = (obj.get("spec") or {}).get("type") or "ClusterIP"
        usage["services.nodeports"] = Decimal(len((obj.get("spec") or {}).get("ports") or ())) if kind in ("NodePort", "LoadBalancer") else Decimal(0)
        usage["services.loadbalancers"] = Decimal(1 if kind == "LoadBalancer" else 0)
    elif resource_name == "v1/persistentvolumeclaims":
        request = (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        usage["requests.storage"] = quantity(request) or Decimal(0)
    return usage


class ResourceQuota:
    name = "ResourceQuota"
    mutating = False

    def __init__(self, server: Any) -> None:
        self.server = server
        self._locks: dict[str, asyncio.Lock] = {}

    def handles(self, request: AdmissionRequest) -> bool:
        return (request.operation == "CREATE" and not request.subresource and request.info.namespaced
                and request.object is not None and bool(request.namespace))

    async def admit(self, request: AdmissionRequest) -> None:
        quotas = await list_objects(self.server, "v1/resourcequotas", request.namespace)
        if not quotas:
            return
        # Held until the request is answered (released by `on_done`), so the object this create adds is
        # stored before the next create in the namespace counts usage.
        lock = self._locks.setdefault(request.namespace, asyncio.Lock())
        await lock.acquire()
        request.on_done.append(lock.release)
        await self._admit(request, quotas)

    async def _admit(self, request: AdmissionRequest, quotas: list[dict]) -> None:
        resource_name = request.info.name
        wanted = usage_of(resource_name, request.object or {})
        relevant = [q for q in quotas if any(k in wanted for k in ((q.get("spec") or {}).get("hard") or {}))]
        if not relevant:
            return
        keys = {k for q in relevant for k in (q.get("spec") or {}).get("hard") or {}}
        used = await self._used(request.namespace, keys)
        for quota in relevant:
            hard = (quota.get("spec") or {}).get("hard") or {}
            if resource_name == "v1/pods":
                missing = [k for k in hard if k in _COMPUTE and wanted.get(k, Decimal(0)) == 0]
                if missing:
                    raise forbidden(request, f"failed quota: {quota['metadata']['name']}: must specify {','.join(sorted(missing))}")
            over = []
            for key, limit in hard.items():
                amount = wanted.get(key)
                cap = quantity(limit)
                if amount is None or cap is None or not amount:
                    continue
                if used.get(key, Decimal(0)) + amount > cap:
                    over.append(key)
            if over:
                over.sort()
                requested = ",".join(f"{k}={format_quantity(wanted[k], k)}" for k in over)
                in_use = ",".join(f"{k}={format_quantity(used.get(k, Decimal(0)), k)}" for k in over)
                limited = ",".join(f"{k}={hard[k]}" for k in over)
                raise forbidden(request, f"exceeded quota: {quota['metadata']['name']}, requested: {requested}, "
                                         f"used: {in_use}, limited: {limited}")
        if request.dry_run:
            return
        for quota in relevant:
            hard = (quota.get("spec") or {}).get("hard") or {}
            after = {k: used.get(k, Decimal(0)) + wanted.get(k, Decimal(0)) for k in hard}
            await self._write_status(quota, hard, after)

    async def _used(self, namespace: str, keys: set[str]) -> dict[str, Decimal]:
        resources = set()
        for key in keys:
            if key.startswith("count/"):
                plural, _, group = key[len("count/"):].partition(".")
                resources.add(f"{group}/v1/{plural}" if group else f"v1/{plural}")
            elif key in _COUNTED:
                resources.add(_COUNTED[key])
            elif key in _COMPUTE:
                resources.add("v1/pods")
            elif key.startswith("services."):
                resources.add("v1/services")
            elif key == "requests.storage":
                resources.add("v1/persistentvolumeclaims")
        used: dict[str, Decimal] = {}
        for resource in resources:
            try:
                items = await list_objects(self.server, resource, namespace)
            except KeyError:
                continue  # a count/ key for a resource this server does not serve
            for obj in items:
                if resource == "v1/pods" and not _active(obj):
                    continue
                for key, amount in usage_of(resource, obj).items():
                    used[key] = used.get(key, Decimal(0)) + amount
        return used

    async def _write_status(self, quota: dict, hard: dict, used: dict[str, Decimal]) -> None:
        info = self.server.kinds.by_resource("v1/resourcequotas")
        status = {"hard": dict(hard), "used": {k: format_quantity(v, k) for k, v in used.items()}}
        if quota.get("status") == status:
            return
        quota = {**quota, "status": status}
        try:
            await self.server.registry.update(info, quota["metadata"]["namespace"], quota["metadata"]["name"],
                                              quota, subresource="status")
        except ApiError as error:  # a concurrent status write: the next admission writes it again
            log.debug("quota status of %s not written: %s", quota["metadata"]["name"], error)
