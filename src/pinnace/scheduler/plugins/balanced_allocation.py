"""NodeResourcesBalancedAllocation: prefer nodes whose resources stay evenly used after placing the pod.

Kubernetes' formula: for each resource the fraction requested/allocatable (capped at 1) including
this pod, then score = (1 - standard deviation of the fractions) * 100. Uses actual requests (not
the non-zero defaults), and skips pods that request none of the resources.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import MAX_NODE_SCORE, SKIP, CycleState, NodeInfo, PodInfo, Status

NAME = "NodeResourcesBalancedAllocation"
MEMO_LIMIT = 20_000  # remembered node scores; Kubernetes supports clusters of 5,000 nodes


class BalancedAllocation:
    name = NAME
    events = ("Pod/Delete", "Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        args = args or {}
        self.resources = [r["name"] for r in args.get("resources") or ({"name": "cpu"}, {"name": "memory"})]
        # node name -> (NodeInfo, its generation, pod cpu, pod memory, score): see score_nodes.
        self._memo: dict[str, tuple[NodeInfo, int, int, int, int]] = {}

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if all(pod.requests.get(name) == 0 for name in self.resources):
            return SKIP
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = []
        for name in self.resources:
            capacity = node.allocatable.get(name)
            if capacity == 0:
                continue
            fractions.append(min(1.0, (node.requested.get(name) + pod.requests.get(name)) / capacity))
        return _score(fractions)

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if self.resources != ["cpu", "memory"]:
            return [self.score(state, pod, n) for n in nodes]
        pc, pm = pod.requests.milli_cpu, pod.requests.memory
        # A node's score only changes when the node does (its generation moves on every pod placed
        # or removed) or the pod's requests differ: replicas of one workload reuse earlier scores.
        memo = self._memo
        if len(memo) > MEMO_LIMIT:
            memo.clear()  # nodes come and go: forget the names no longer seen
        scores: list[int] = []
        append = scores.append
        for n in nodes:
            known = memo.get(n.name)
            if known is not None and known[0] is n and known[1] == n.generation and known[2] == pc \
                    and known[3] == pm:
                append(known[4])
                continue
            alloc = n.allocatable
            cap_c = alloc.milli_cpu
            cap_m = alloc.memory
            if cap_c and cap_m:
                used = n.requested
                fc = (used.milli_cpu + pc) / cap_c
                fm = (used.memory + pm) / cap_m
                if fc > 1.0:
                    fc = 1.0
                if fm > 1.0:
                    fm = 1.0
                # With two resources the standard deviation is half the difference.
                score = int((1 - (fc - fm if fc > fm else fm - fc) / 2) * MAX_NODE_SCORE)
            else:
                score = self.score(state, pod, n)
            memo[n.name] = (n, n.generation, pc, pm, score)
            append(score)
        return scores


def _score(fractions: list[float]) -> int:
    if len(fractions) < 2:
        return MAX_NODE_SCORE
    if len(fractions) == 2:
        std = abs(fractions[0] - fractions[1]) / 2
    else:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)
