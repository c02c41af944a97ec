"""InterPodAffinity: required pod affinity and anti-affinity filter; preferred terms score.

Kubernetes semantics, including the symmetric rule:
- Filter rejects a node when the incoming pod's required affinity terms find no matching pod in the
  node's topology domain (unless no pod anywhere matches and the pod matches its own terms: the first
  replica of a self-affine group may go anywhere the topology keys exist), when its required
  anti-affinity terms find a matching pod in the domain, or when a pod already placed has a required
  anti-affinity term that selects the incoming pod within the domain.
- A term selects pods in `namespaces` and in namespaces matching `namespaceSelector` (`{}`: all);
  with neither, the pod's own namespace. A nil labelSelector selects nothing.
- Score: per topology domain, + weight for each placed pod the incoming pod's preferred affinity
  selects, - weight for anti-affinity; and symmetrically the placed pods' preferred terms (and their
  required affinity, at `hardPodAffinityWeight`, default 1) that select the incoming pod. Scores are
  min-max scaled to 0..100.

Counting goes through the cache's label-group and term-group indexes, so a cycle costs per distinct
label set and term, not per placed pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    AffinityTerm,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    first_equality,
    unresolvable,
    unschedulable,
)

NAME = "InterPodAffinity"
AFFINITY_REASON = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY_REASON = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY_REASON = "node(s) didn't satisfy existing pods anti-affinity rules"

Pair = tuple[str, str]


# Shared rejections: a failing node costs no allocation (the runtime only stamps the plugin name).
_AFFINITY = unresolvable(AFFINITY_REASON)
_ANTI_AFFINITY = unschedulable(ANTI_AFFINITY_REASON)
_EXISTING_ANTI_AFFINITY = unschedulable(EXISTING_ANTI_AFFINITY_REASON)


class _FilterState:
    __slots__ = ("affinity", "anti_affinity", "existing_anti_affinity", "existing_keys")

    def __init__(self) -> None:
        self.existing_anti_affinity: dict[Pair, int] = {}
        self.existing_keys: set[str] = set()  # topology keys of existing_anti_affinity, to look up by
        self.affinity: dict[Pair, int] = {}
        self.anti_affinity: dict[Pair, int] = {}

    def clone(self) -> _FilterState:
        c = _FilterState()
        c.existing_anti_affinity = dict(self.existing_anti_affinity)
        c.existing_keys = set(self.existing_keys)
        c.affinity = dict(self.affinity)
        c.anti_affinity = dict(self.anti_affinity)
        return c


def _bump(counts: dict[Pair, int], pair: Pair, n: int) -> None:
    value = counts.get(pair, 0) + n
    if value:
        counts[pair] = value
    else:
        counts.pop(pair, None)


class InterPodAffinity:
    name = NAME
    events = ("Pod/Add", "Pod/Update", "Pod/Delete", "Node/Add", "Node/Update", "Namespace/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        args = args or {}
        self.handle = handle
        self.hard_pod_affinity_weight = int(args.get("hardPodAffinityWeight", 1))

    # ---- helpers

    def _ns_labels(self, namespace: str) -> Mapping[str, str]:
        return self.handle.namespace_labels(namespace)

    def _groups(self, term: AffinityTerm):
        """Label groups of placed pods the term selects."""
        ns_labels = self._ns_labels
        return self.handle.snapshot.label_groups_matching(
            lambda ns: term.matches_namespace(ns, ns_labels(ns)), term.selector, first_equality(term.selector))

    def _spread(self, counts: dict[Pair, int], topology_key: str, nodes: Mapping[str, int], sign: int = 1) -> None:
        """Add per-node pod counts to the counts of the nodes' topology domains."""
        node_infos = self.handle.snapshot.nodes
        for node_name, n in nodes.items():
            info = node_infos.get(node_name)
            if info is None:
                continue
            value = info.labels.get(topology_key)
            if value is not None:
                pair = (topology_key, value)
                counts[pair] = counts.get(pair, 0) + sign * n

    # ---- PreFilter / Filter

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        snapshot = self.handle.snapshot
        if not pod.required_affinity_terms and not pod.required_anti_affinity_terms \
                and not snapshot.required_anti_affinity:
            return SKIP
        s = _FilterState()
        own_ns_labels = self._ns_labels(pod.namespace)
        for group in snapshot.required_anti_affinity.candidates(pod.labels):
            term = group.term
            if term.matches(pod.namespace, pod.labels, own_ns_labels):
                self._spread(s.existing_anti_affinity, term.topology_key, group.nodes)
        terms = pod.required_affinity_terms
        if terms:
            first = terms[0]
            for group in self._groups(first):
                if all(t.matches(group.namespace, group.labels, self._ns_labels(group.namespace)) for t in terms[1:]):
                    for t in terms:
                        self._spread(s.affinity, t.topology_key, group.nodes)
        for term in pod.required_anti_affinity_terms:
            for group in self._groups(term):
                self._spread(s.anti_affinity, term.topology_key, group.nodes)
        s.existing_keys = {key for key, _ in s.existing_anti_affinity}
        if not s.existing_anti_affinity and not pod.required_affinity_terms and not pod.required_anti_affinity_terms:
            return SKIP  # nothing placed can conflict with this pod
        state[NAME] = s
        return None

    def _matches_all_own_terms(self, pod: PodInfo) -> bool:
        ns_labels = self._ns_labels(pod.namespace)
        return all(t.matches(pod.namespace, pod.labels, ns_labels) for t in pod.required_affinity_terms)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _FilterState | None = state.get(NAME)
        if s is None:
            return None
        labels = node.labels
        if pod.required_affinity_terms:
            pods_exist = True
            for term in pod.required_affinity_terms:
                value = labels.get(term.topology_key)
                if value is None:
                    return _AFFINITY  # every topology key must exist on the node
                if s.affinity.get((term.topology_key, value), 0) <= 0:
                    pods_exist = False
            if not pods_exist and not (not s.affinity and self._matches_all_own_terms(pod)):
                return _AFFINITY
        anti = s.anti_affinity
        if anti:
            for term in pod.required_anti_affinity_terms:
                key = term.topology_key
                value = labels.get(key)
                if value is not None and anti.get((key, value), 0) > 0:
                    return _ANTI_AFFINITY
        existing = s.existing_anti_affinity
        if existing:
            for key in s.existing_keys:
                value = labels.get(key)
                if value is not None and existing.get((key, value), 0) > 0:
                    return _EXISTING_ANTI_AFFINITY
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None]:
        s: _FilterState | None = state.get(NAME)
        if s is None:
            return [None] * len(nodes)
        if pod.required_affinity_terms:
            return [self.filter(state, pod, n) for n in nodes]
        anti = s.anti_affinity
        anti_keys = [t.topology_key for t in pod.required_anti_affinity_terms] if anti else []
        existing = s.existing_anti_affinity
        existing_keys = list(s.existing_keys) if existing else []
        results: list[Status | None] = []
        append = results.append
        for n in nodes:
            labels = n.labels
            status = None
            for key in anti_keys:
                value = labels.get(key)
                if value is not None and anti.get((key, value), 0) > 0:
                    status = _ANTI_AFFINITY
                    break
            if status is None:
                for key in existing_keys:
                    value = labels.get(key)
                    if value is not None and existing.get((key, value), 0) > 0:
                        status = _EXISTING_ANTI_AFFINITY
                        break
            append(status)
        return results

    # ---- PreFilterExtensions (preemption dry runs)

    def _update(self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, sign: int) -> None:
        s: _FilterState | None = state.get(NAME)
        if s is None:
            return
        labels = node.labels
        own_ns_labels = self._ns_labels(pod.namespace)
        for term in other.required_anti_affinity_terms:
            if term.matches(pod.namespace, pod.labels, own_ns_labels) and term.topology_key in labels:
                _bump(s.existing_anti_affinity, (term.topology_key, labels[term.topology_key]), sign)
                s.existing_keys.add(term.topology_key)
        other_ns_labels = self._ns_labels(other.namespace)
        terms = pod.required_affinity_terms
        if terms and all(t.matches(other.namespace, other.labels, other_ns_labels) for t in terms):
            for t in terms:
                if t.topology_key in labels:
                    _bump(s.affinity, (t.topology_key, labels[t.topology_key]), sign)
        for t in pod.required_anti_affinity_terms:
            if t.matches(other.namespace, other.labels, other_ns_labels) and t.topology_key in labels:
                _bump(s.anti_affinity, (t.topology_key, labels[t.topology_key]), sign)

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, added, node, +1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, removed, node, -1)

    # ---- Scoring

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        snapshot = self.handle.snapshot
        counts: dict[Pair, int] = {}
        for term in pod.preferred_affinity_terms:
            for group in self._groups(term):
                self._spread(counts, term.topology_key, group.nodes, term.weight)
        for term in pod.preferred_anti_affinity_terms:
            for group in self._groups(term):
                self._spread(counts, term.topology_key, group.nodes, -term.weight)
        own_ns_labels = self._ns_labels(pod.namespace)
        symmetric = (
            (snapshot.required_affinity, self.hard_pod_affinity_weight, False),
            (snapshot.preferred_affinity, 1, True),
            (snapshot.preferred_anti_affinity, -1, True),
        )
        for index, factor, weighted in symmetric:
            if not factor:
                continue
            for group in index.candidates(pod.labels):
                term = group.term
                if term.matches(pod.namespace, pod.labels, own_ns_labels):
                    weight = factor * (term.weight if weighted else 1)
                    self._spread(counts, term.topology_key, group.nodes, weight)
        by_key: dict[str, dict[str, int]] = {}
        for (key, value), n in counts.items():
            if n:
                by_key.setdefault(key, {})[value] = n
        if not by_key:
            return SKIP
        state[NAME + "/score"] = by_key
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = 0
        labels = node.labels
        for key, values in state[NAME + "/score"].items():
            value = labels.get(key)
            if value is not None:
                total += values.get(value, 0)
        return total

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        if not scores:
            return
        low, high = min(scores), max(scores)
        spread = high - low
        for i, s in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * (s - low) / spread) if spread > 0 else 0
