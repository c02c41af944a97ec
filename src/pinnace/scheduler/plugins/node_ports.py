"""NodePorts: a pod's hostPorts must be free on the node.

Two host ports conflict when protocol and port are equal and either binds all addresses (0.0.0.0)
or both bind the same address, as in Kubernetes' HostPortInfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import SKIP, CycleState, NodeInfo, PodInfo, Status, unschedulable

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"
ANY_IP = "0.0.0.0"


def port_conflicts(used: Mapping[tuple[str, str, int], int], wanted: tuple[str, str, int]) -> bool:
    protocol, ip, port = wanted
    if ip == ANY_IP:
        return any(p == port and proto == protocol for proto, _, p in used)
    return (protocol, ip, port) in used or (protocol, ANY_IP, port) in used


class NodePorts:
    name = NAME
    events = ("Pod/Delete", "Node/Add")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        return None if pod.ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.used_ports and any(port_conflicts(node.used_ports, p) for p in pod.ports):
            return unschedulable(REASON)
        return None
