"""PodTopologySpread: keep matching pods evenly spread over topology domains.

Kubernetes semantics for `spec.topologySpreadConstraints`:
- DoNotSchedule constraints filter. For each, count the pods in the incoming pod's namespace that
  match the constraint's selector (plus `matchLabelKeys`) per domain (value of `topologyKey`) over the
  eligible nodes: nodes having every constraint's topology key, matching the pod's required node
  affinity/nodeSelector when `nodeAffinityPolicy` is Honor (default), and whose taints the pod
  tolerates when `nodeTaintsPolicy` is Honor (default Ignore). A node passes if
  `count(domain) + (1 if the pod matches itself) - min over domains <= maxSkew`; when there are fewer
  domains than `minDomains`, the minimum counts as 0. A node lacking the topology key is rejected as
  unresolvable.
- ScheduleAnyway constraints score: fewer matching pods in the node's domain is better, weighted by
  log(number of domains + 2), then scaled to 0..100 (Kubernetes' formula).

pinnace does not apply the cluster-level default constraints Kubernetes adds for pods owned by
Services and ReplicaSets; only constraints in the pod spec count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import (
    LABEL_HOSTNAME,
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    compile_selector,
    first_equality,
    unresolvable,
    unschedulable,
)
from pinnace.scheduler.plugins.node_affinity import has_required, matches_required
from pinnace.scheduler.plugins.taint_toleration import first_untolerated

NAME = "PodTopologySpread"
REASON = "node(s) didn't match pod topology spread constraints"
MISSING_LABEL_REASON = "node(s) didn't match pod topology spread constraints (missing required label)"


class Constraint:
    __slots__ = ("affinity_honor", "max_skew", "min_domains", "selector", "self_match", "taints_honor",
                 "topology_key", "when")

    def __init__(self, raw: Mapping, pod: PodInfo) -> None:
        self.max_skew = int(raw.get("maxSkew") or 1)
        self.topology_key: str = raw.get("topologyKey") or ""
        self.when = raw.get("whenUnsatisfiable") or "DoNotSchedule"
        self.min_domains = int(raw.get("minDomains") or 1)
        self.affinity_honor = (raw.get("nodeAffinityPolicy") or "Honor") == "Honor"
        self.taints_honor = (raw.get("nodeTaintsPolicy") or "Ignore") == "Honor"
        self.selector = compile_selector(raw.get("labelSelector"), pod.labels, raw.get("matchLabelKeys") or ())
        self.self_match = 1 if self.selector.matches(pod.labels) else 0


def constraints_of(pod: PodInfo, when: str) -> list[Constraint]:
    raw = pod.spec.get("topologySpreadConstraints") or ()
    return [c for c in (Constraint(r, pod) for r in raw) if c.when == when]


# Shared rejections: a failing node costs no allocation (the runtime only stamps the plugin name).
_SKEWED = unschedulable(REASON)
_MISSING_LABEL = unresolvable(MISSING_LABEL_REASON)


class _FilterState:
    __slots__ = ("_verdicts", "blocked", "constraints", "counts", "minimums", "zero_blocked")

    def __init__(self, constraints: list[Constraint]) -> None:
        self.constraints = constraints
        self.counts: list[dict[str, int]] = [{} for _ in constraints]
        self.minimums: list[int] = [0] * len(constraints)
        # Per constraint: domains where one more pod would exceed maxSkew, and whether a domain
        # without eligible nodes (count 0) would.
        self.blocked: list[set[str]] = [set() for _ in constraints]
        self.zero_blocked: list[bool] = [False] * len(constraints)
        self._verdicts: dict[str | None, Status | None] | None = None

    def verdicts(self) -> dict[str | None, Status | None]:
        """First constraint's Filter result per known domain, and for a node lacking the key."""
        if self._verdicts is None:
            blocked = self.blocked[0]
            table: dict[str | None, Status | None] = {v: _SKEWED if v in blocked else None for v in self.counts[0]}
            table[None] = _MISSING_LABEL
            self._verdicts = table
        return self._verdicts

    def refresh(self) -> None:
        self._verdicts = None
        for i, c in enumerate(self.constraints):
            counts = self.counts[i]
            low = min(counts.values()) if counts else 2**31 - 1
            low = 0 if len(counts) < c.min_domains else low
            self.minimums[i] = low
            limit = c.max_skew + low - c.self_match  # counts above this are too skewed
            self.blocked[i] = {v for v, n in counts.items() if n > limit}
            self.zero_blocked[i] = 0 > limit

    def clone(self) -> _FilterState:
        c = _FilterState(self.constraints)
        c.counts = [dict(x) for x in self.counts]
        c.minimums = list(self.minimums)
        c.blocked = [set(x) for x in self.blocked]
        c.zero_blocked = list(self.zero_blocked)
        return c


class PodTopologySpread:
    name = NAME
    events = ("Pod/Add", "Pod/Update", "Pod/Delete", "Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        self.handle = handle

    def _matching_per_node(self, pod: PodInfo, c: Constraint) -> dict[str, int]:
        """Pods on each node that the constraint's selector matches, in the pod's namespace."""
        per_node: dict[str, int] = {}
        namespace = pod.namespace
        for group in self.handle.snapshot.label_groups_matching(
                lambda ns: ns == namespace, c.selector, first_equality(c.selector)):
            for node_name, n in group.nodes.items():
                per_node[node_name] = per_node.get(node_name, 0) + n
        return per_node

    def _eligible(self, pod: PodInfo, c: Constraint, node: NodeInfo, affinity_required: bool) -> bool:
        if c.affinity_honor and affinity_required and not matches_required(pod.pod, node.labels, node.fields):
            return False
        return not (c.taints_honor and node.schedule_taints
                    and first_untolerated(node.schedule_taints, pod.tolerations) is not None)

    # ---- PreFilter / Filter

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        constraints = constraints_of(pod, "DoNotSchedule")
        if not constraints:
            return SKIP
        snapshot = self.handle.snapshot
        s = _FilterState(constraints)
        keys = tuple(c.topology_key for c in constraints)
        affinity_required = has_required(pod.pod)
        tainted = snapshot.tainted_nodes > 0
        if not any((c.affinity_honor and affinity_required) or (c.taints_honor and tainted) for c in constraints):
            # Every node with the keys is eligible: add up the per-domain counts the cache keeps for
            # each matching label group, which costs the number of domains, not of nodes.
            _, domains = snapshot.topology(keys)
            namespace = pod.namespace
            for i, c in enumerate(constraints):
                counts = s.counts[i] = dict.fromkeys(domains[i], 0)
                for group in snapshot.label_groups_matching(
                        lambda ns: ns == namespace, c.selector, first_equality(c.selector)):
                    for value, n in snapshot.domain_counts(group, keys)[i].items():
                        if n:
                            counts[value] += n
        else:
            per_node = [self._matching_per_node(pod, c) for c in constraints]
            for node in snapshot.node_list():
                labels = node.labels
                if not all(k in labels for k in keys):
                    continue
                for i, c in enumerate(constraints):
                    if not self._eligible(pod, c, node, affinity_required):
                        continue
                    value = labels[c.topology_key]
                    counts = s.counts[i]
                    counts[value] = counts.get(value, 0) + per_node[i].get(node.name, 0)
        s.refresh()
        state[NAME] = s
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _FilterState | None = state.get(NAME)
        if s is None:
            return None
        labels = node.labels
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return _MISSING_LABEL
            if value in s.blocked[i] or (s.zero_blocked[i] and value not in s.counts[i]):
                return _SKEWED
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None]:
        s: _FilterState | None = state.get(NAME)
        if s is None:
            return [None] * len(nodes)
        if len(s.constraints) != 1:
            return [self.filter(state, pod, n) for n in nodes]
        # One lookup per node: the verdict of the node's domain (None for a node without the key).
        key = s.constraints[0].topology_key
        verdicts = s.verdicts()
        unknown = _SKEWED if s.zero_blocked[0] else None
        return [verdicts.get(n.labels.get(key), unknown) for n in nodes]

    def _update(self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, sign: int) -> None:
        s: _FilterState | None = state.get(NAME)
        if s is None or other.namespace != pod.namespace:
            return
        labels = node.labels
        if not all(c.topology_key in labels for c in s.constraints):
            return
        affinity_required = has_required(pod.pod)
        for i, c in enumerate(s.constraints):
            if c.selector.matches(other.labels) and self._eligible(pod, c, node, affinity_required):
                value = labels[c.topology_key]
                s.counts[i][value] = s.counts[i].get(value, 0) + sign
        s.refresh()

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, added, node, +1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, removed, node, -1)

    # ---- Scoring

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        constraints = constraints_of(pod, "ScheduleAnyway")
        if not constraints:
            return SKIP
        keys = [c.topology_key for c in constraints]
        ignored = {n.name for n in nodes if not all(k in n.labels for k in keys)}
        domains: list[set[str]] = [set() for _ in constraints]
        for n in nodes:
            if n.name in ignored:
                continue
            for i, c in enumerate(constraints):
                domains[i].add(n.labels[c.topology_key])
        considered = len(nodes) - len(ignored)
        weights = [math.log((considered if c.topology_key == LABEL_HOSTNAME else len(domains[i])) + 2)
                   for i, c in enumerate(constraints)]
        per_node = [self._matching_per_node(pod, c) for c in constraints]
        counts: list[dict[str, int]] = [{} for _ in constraints]
        affinity_required = has_required(pod.pod)
        for i, c in enumerate(constraints):
            if c.topology_key == LABEL_HOSTNAME:
                continue  # per-node counts are read directly in Score
            wanted = domains[i]
            node_infos = self.handle.snapshot.nodes
            for node_name, n in per_node[i].items():
                node = node_infos.get(node_name)
                if node is None or not all(k in node.labels for k in keys):
                    continue
                value = node.labels[c.topology_key]
                if value in wanted and self._eligible(pod, c, node, affinity_required):
                    counts[i][value] = counts[i].get(value, 0) + n
        state[NAME + "/score"] = (constraints, ignored, weights, per_node, counts, nodes)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        constraints, ignored, weights, per_node, counts, _ = state[NAME + "/score"]
        if node.name in ignored:
            return 0
        total = 0.0
        for i, c in enumerate(constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                n = per_node[i].get(node.name, 0)
            else:
                n = counts[i].get(value, 0)
            total += n * weights[i] + (c.max_skew - 1)
        return math.floor(total + 0.5)  # Go's math.Round: halves away from zero

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        _, ignored, _, _, _, nodes = state[NAME + "/score"]
        considered = [s for s, n in zip(scores, nodes, strict=True) if n.name not in ignored]
        if not considered:
            scores[:] = [0] * len(scores)
            return
        low, high = min(considered), max(considered)
        for i, (s, n) in enumerate(zip(scores, nodes, strict=True)):
            if n.name in ignored:
                scores[i] = 0
            elif high == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (high + low - s) // high
