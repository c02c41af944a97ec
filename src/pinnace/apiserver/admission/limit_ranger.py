"""LimitRanger: LimitRange defaults and bounds for pods' containers (and whole pods, and PVCs).

`type: Container` items default missing `resources.limits` from `default` and missing requests from
`defaultRequest` (or the limit), then check `min`, `max` and `maxLimitRequestRatio`; `type: Pod` items
check the sum over containers; `type: PersistentVolumeClaim` checks storage requests. A violation is
403 with Kubernetes' wording: `maximum cpu usage per Container is 1, but limit is 2`.
"""

from __future__ import annotations

from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden
from pinnace.apiserver.admission._objects import containers, list_objects, quantity


class LimitRanger:
    name = "LimitRanger"
    mutating = True

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        return request.object is not None and (
            request.is_("v1/pods", "CREATE") or request.is_("v1/persistentvolumeclaims", "CREATE", "UPDATE")
        )

    async def admit(self, request: AdmissionRequest) -> None:
        ranges = await list_objects(self.server, "v1/limitranges", request.namespace)
        if not ranges:
            return
        obj = request.object or {}
        errors: list[str] = []
        for limit_range in ranges:
            for item in (limit_range.get("spec") or {}).get("limits") or ():
                if not isinstance(item, dict):
                    continue
                kind = item.get("type")
                if request.resource == "pods" and kind == "Container":
                    for container in containers(obj):
                        _default(container, item)
                        errors += _bounds(item, container.get("resources") or {}, "Container")
                elif request.resource == "pods" and kind == "Pod":
                    errors += _bounds(item, _pod_totals(obj), "Pod")
                elif request.resource == "persistentvolumeclaims" and kind == "PersistentVolumeClaim":
                    errors += _bounds(item, (obj.get("spec") or {}).get("resources") or {}, "PersistentVolumeClaim")
        if errors:
            raise forbidden(request, "[" + ", ".join(errors) + "]")


def _default(container: dict, item: dict) -> None:
    resources = container.setdefault("resources", {})
    if not isinstance(resources, dict):
        return
    limits = resources.setdefault("limits", {})
    requests = resources.setdefault("requests", {})
    for name, value in (item.get("default") or {}).items():
        limits.setdefault(name, value)
    for name, value in (item.get("defaultRequest") or {}).items():
        requests.setdefault(name, value)
    for name, value in limits.items():
        requests.setdefault(name, value)  # a request defaults to the limit, as in Kubernetes
    if not limits:
        resources.pop("limits")
    if not requests:
        resources.pop("requests")


def _pod_totals(pod: dict) -> dict:
    totals: dict[str, dict] = {"requests": {}, "limits": {}}
    for container in containers(pod, init=False):
        for part in ("requests", "limits"):
            for name, value in ((container.get("resources") or {}).get(part) or {}).items():
                amount = quantity(value)
                if amount is not None:
                    totals[part][name] = totals[part].get(name, 0) + amount
    return totals


def _bounds(item: dict, resources: dict, kind: str) -> list[str]:
    errors = []
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    for name, bound in (item.get("min") or {}).items():
        low = quantity(bound)
        request = quantity(requests.get(name)) if name in requests else None
        if low is None:
            continue
        if request is None:
            errors.append(f"minimum {name} usage per {kind} is {bound}.  No request is specified")
        elif request < low:
            errors.append(f"minimum {name} usage per {kind} is {bound}, but request is {requests[name]}")
    for name, bound in (item.get("max") or {}).items():
        high = quantity(bound)
        limit = quantity(limits.get(name)) if name in limits else None
        if high is None:
            continue
        if limit is None:
            errors.append(f"maximum {name} usage per {kind} is {bound}.  No limit is specified")
        elif limit > high:
            errors.append(f"maximum {name} usage per {kind} is {bound}, but limit is {limits[name]}")
    for name, ratio in (item.get("maxLimitRequestRatio") or {}).items():
        most, limit, request = quantity(ratio), quantity(limits.get(name)), quantity(requests.get(name))
        if most is not None and limit is not None and request and limit / request > most:
            errors.append(f"{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {limit / request:f}")
    return errors
