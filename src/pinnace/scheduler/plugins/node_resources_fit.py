"""NodeResourcesFit: the pod's requests must fit the node's allocatable minus what is already requested.

Requests are counted as Kubernetes counts them (framework.pod_requests: containers summed, init
containers at their peak, sidecars alongside, overhead added) for cpu, memory, ephemeral-storage,
extended resources such as `example.com/gpu`, and the pod count. Pods the scheduler assumed but
whose binding it has not yet seen count too, since they are in the cache.

Scoring strategies (pluginConfig `scoringStrategy.type`): LeastAllocated (default, spreads),
MostAllocated (packs) and RequestedToCapacityRatio (a piecewise-linear shape), each a weighted
average over `scoringStrategy.resources` (default cpu and memory, weight 1). Scores use the
"non-zero" requests (100m cpu / 200Mi memory for containers that state none), as Kubernetes does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pinnace.scheduler.framework import (
    MAX_NODE_SCORE,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    unschedulable,
)

NAME = "NodeResourcesFit"
MEMO_LIMIT = 20_000  # remembered node scores; Kubernetes supports clusters of 5,000 nodes
TOO_MANY_PODS = "Too many pods"
DEFAULT_RESOURCES = ({"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1})


def insufficient(pod: PodInfo, node: NodeInfo, ignored: frozenset[str] = frozenset(),
                 ignored_groups: frozenset[str] = frozenset()) -> list[str]:
    """The reasons the pod does not fit (empty when it fits), in Kubernetes' order and words."""
    reasons = []
    allocatable = node.allocatable
    requested = node.requested
    if len(node.pods) + 1 > allocatable.allowed_pods:
        reasons.append(TOO_MANY_PODS)
    want = pod.requests
    if want.milli_cpu and want.milli_cpu > allocatable.milli_cpu - requested.milli_cpu:
        reasons.append("Insufficient cpu")
    if want.memory and want.memory > allocatable.memory - requested.memory:
        reasons.append("Insufficient memory")
    if want.ephemeral_storage and want.ephemeral_storage > allocatable.ephemeral_storage - requested.ephemeral_storage:
        reasons.append("Insufficient ephemeral-storage")
    for name, amount in want.scalar.items():
        if not amount or name in ignored or ("/" in name and name.split("/", 1)[0] in ignored_groups):
            continue
        if amount > allocatable.scalar.get(name, 0) - requested.scalar.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def _least_allocated(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def _most_allocated(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    if requested > capacity:
        requested = capacity  # over-committed nodes count as full, not beyond
    return requested * MAX_NODE_SCORE // capacity


def _broken_linear(shape: Sequence[tuple[int, int]]):
    def score(requested: int, capacity: int) -> int:
        if capacity == 0 or requested > capacity:
            return shape[-1][1]
        utilization = requested * 100 // capacity
        for i, (x, y) in enumerate(shape):
            if utilization <= x:
                if i == 0:
                    return y
                x0, y0 = shape[i - 1]
                return y0 + (y - y0) * (utilization - x0) // (x - x0)
        return shape[-1][1]
    return score


class NodeResourcesFit:
    name = NAME
    events = ("Pod/Delete", "Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        args = args or {}
        strategy = args.get("scoringStrategy") or {}
        self.strategy = strategy.get("type") or "LeastAllocated"
        self.resources = [(r["name"], int(r.get("weight") or 1)) for r in strategy.get("resources") or DEFAULT_RESOURCES]
        self.weight_sum = sum(w for _, w in self.resources) or 1
        self.ignored = frozenset(args.get("ignoredResources") or ())
        self.ignored_groups = frozenset(args.get("ignoredResourceGroups") or ())
        if self.strategy == "LeastAllocated":
            self._scorer = _least_allocated
        elif self.strategy == "MostAllocated":
            self._scorer = _most_allocated
        elif self.strategy == "RequestedToCapacityRatio":
            shape = (strategy.get("requestedToCapacityRatio") or {}).get("shape") or [
                {"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]
            # Shape scores are 0..10 in the configuration API.
            self._scorer = _broken_linear([(int(p["utilization"]), int(p["score"]) * 10) for p in shape])
        else:
            raise ValueError(f"NodeResourcesFit: unknown scoring strategy {self.strategy!r}")
        self._cpu_mem_only = [n for n, _ in self.resources] in (["cpu", "memory"], ["memory", "cpu"])
        # node name -> (NodeInfo, its generation, pod cpu, pod memory, score): see score_nodes.
        self._memo: dict[str, tuple[NodeInfo, int, int, int, int]] = {}

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        # Inline fast path for the common case: room for the pod's cpu and memory, no scalars.
        want = pod.requests
        alloc = node.allocatable
        used = node.requested
        if (len(node.pods) < alloc.allowed_pods
                and want.milli_cpu + used.milli_cpu <= alloc.milli_cpu
                and want.memory + used.memory <= alloc.memory
                and (not want.ephemeral_storage
                     or want.ephemeral_storage + used.ephemeral_storage <= alloc.ephemeral_storage)
                and not want.scalar):
            return None
        reasons = insufficient(pod, node, self.ignored, self.ignored_groups)
        return unschedulable(*reasons) if reasons else None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None]:
        want = pod.requests
        if want.scalar or want.ephemeral_storage:
            return [self.filter(state, pod, n) for n in nodes]
        cpu, memory = want.milli_cpu, want.memory
        results: list[Status | None] = []
        append = results.append
        for n in nodes:
            alloc = n.allocatable
            used = n.requested
            if len(n.pods) < alloc.allowed_pods and cpu + used.milli_cpu <= alloc.milli_cpu \
                    and memory + used.memory <= alloc.memory:
                append(None)
            else:
                append(self.filter(state, pod, n))
        return results

    def _requested(self, pod: PodInfo, node: NodeInfo, name: str) -> tuple[int, int]:
        if name == "cpu":
            return node.non_zero_cpu + pod.non_zero_cpu, node.allocatable.milli_cpu
        if name == "memory":
            return node.non_zero_memory + pod.non_zero_memory, node.allocatable.memory
        return node.requested.get(name) + pod.requests.get(name), node.allocatable.get(name)

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = 0
        weights = 0
        for name, weight in self.resources:
            requested, capacity = self._requested(pod, node, name)
            if capacity == 0 and name not in ("cpu", "memory"):
                continue  # nodes without an extended resource are not judged on it
            total += self._scorer(requested, capacity) * weight
            weights += weight
        return total // weights if weights else 0

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if not self._cpu_mem_only or self.strategy != "LeastAllocated":
            return [self.score(state, pod, n) for n in nodes]
        # LeastAllocated on cpu and memory: the default, written out for speed. A node's score only
        # changes when the node does (its generation moves on every pod placed or removed) or the
        # pod's requests differ, so replicas of one workload mostly reuse the previous pod's scores:
        # each cycle places one pod, and a cycle scores hundreds of nodes.
        weights = dict(self.resources)
        wc, wm = weights["cpu"], weights["memory"]
        ws = wc + wm
        pc, pm = pod.non_zero_cpu, pod.non_zero_memory
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
            cap_c = n.allocatable.milli_cpu
            cap_m = n.allocatable.memory
            rc = n.non_zero_cpu + pc
            rm = n.non_zero_memory + pm
            sc = (cap_c - rc) * 100 // cap_c if cap_c and rc <= cap_c else 0
            sm = (cap_m - rm) * 100 // cap_m if cap_m and rm <= cap_m else 0
            score = (sc * wc + sm * wm) // ws
            memo[n.name] = (n, n.generation, pc, pm, score)
            append(score)
        return scores
