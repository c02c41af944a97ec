"""NodeName: a pod that names its node (`spec.nodeName`) fits only that node.

The scheduler only sees pods without a node, so this matters for preemption dry runs and for
profiles that reuse the filters; same reason and code as Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import SKIP, CycleState, NodeInfo, PodInfo, Status, unresolvable

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = NAME
    events = ("Node/Add",)

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        wanted = (pod.pod.get("spec") or {}).get("nodeName")
        return {wanted} if wanted else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        wanted = (pod.pod.get("spec") or {}).get("nodeName")
        if wanted and wanted != node.name:
            return unresolvable(REASON)
        return None
