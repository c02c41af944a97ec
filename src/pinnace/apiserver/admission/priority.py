"""Priority: a pod's `priorityClassName` resolves to `spec.priority` (and `preemptionPolicy`).

No class named: the PriorityClass with `globalDefault: true`, or priority 0. The built-in
`system-cluster-critical` (2000000000) and `system-node-critical` (2000001000) exist without objects.
An unknown class is a 403 as in Kubernetes; a pod that names a class and sets `spec.priority` must
match it. Where pinnace differs: a pod that sets `spec.priority` without naming a class keeps it.
"""

from __future__ import annotations

from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden
from pinnace.apiserver.admission._objects import list_objects

BUILT_IN = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


class Priority:
    name = "Priority"
    mutating = True

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        return request.is_("v1/pods", "CREATE") and isinstance((request.object or {}).get("spec"), dict)

    async def admit(self, request: AdmissionRequest) -> None:
        spec = (request.object or {})["spec"]
        class_name = spec.get("priorityClassName")
        value, policy = 0, None
        if class_name in BUILT_IN:
            value, policy = BUILT_IN[class_name], "PreemptLowerPriority"
        elif class_name:
            found = self.server.security.cached_object("scheduling.k8s.io/v1/priorityclasses", None, class_name)
            if found is None:
                raise forbidden(request, f"no PriorityClass with name {class_name} was found")
            value, policy = found.get("value", 0), found.get("preemptionPolicy")
        elif spec.get("priority") is not None:
            # Deviation: Kubernetes refuses a bare `spec.priority`; pinnace keeps it when no class is
            # named, which tests and tools that build pods by hand rely on.
            return
        else:
            for candidate in await list_objects(self.server, "scheduling.k8s.io/v1/priorityclasses", None):
                if candidate.get("globalDefault"):
                    value, policy = candidate.get("value", 0), candidate.get("preemptionPolicy")
                    spec["priorityClassName"] = candidate["metadata"]["name"]
                    break
        if spec.get("priority") is not None and spec["priority"] != value:
            raise forbidden(request, "the integer value of priority "
                                     f"({spec['priority']}) must not be provided in pod spec; priority admission "
                                     f"controller computed {value} from the given PriorityClass name")
        spec["priority"] = value
        if policy and not spec.get("preemptionPolicy"):
            spec["preemptionPolicy"] = policy
