"""NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take no new pods.

As in Kubernetes, a pod tolerating the `node.kubernetes.io/unschedulable:NoSchedule` taint may still
go there (DaemonSet pods do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import SKIP, CycleState, NodeInfo, PodInfo, Status, unresolvable
from pinnace.scheduler.plugins.taint_toleration import tolerates

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


class NodeUnschedulable:
    name = NAME
    events = ("Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        # Nothing to check when no node is cordoned: skipping saves a call per node.
        if self.handle is not None and self.handle.snapshot.unschedulable_nodes == 0:
            return SKIP
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.unschedulable and not tolerates(pod.tolerations, UNSCHEDULABLE_TAINT):
            return unresolvable(REASON)
        return None
