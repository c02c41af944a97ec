"""The scheduler's cache: every node with the pods bound or assumed onto it, kept incrementally.

Kubernetes snapshots its cache at the start of each cycle because its cycle runs on many goroutines.
Here a scheduling cycle is one synchronous stretch of code on the event loop, so the cache itself is
the snapshot: nothing can change it while a cycle runs, and no per-cycle copy is needed.

Assumed pods: after choosing a node the scheduler adds the pod to the cache at once ("assume") and
binds in the background, so the next pod already sees the resources taken. When the informer later
reports the pod bound, the assumption is confirmed; if binding fails, `forget_pod` takes it back.

Besides per-node aggregates, the cache keeps two indexes that make inter-pod affinity and topology
spreading cost per distinct label set or term, not per pod:
- label groups: pods grouped by (namespace, labels) with a count per node, indexed by label pair;
- term groups: the required/preferred (anti-)affinity terms of placed pods, grouped by identical
  term, with a count per node, indexed by the label pairs their selectors require.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

from pinnace.scheduler.framework import LABEL_ZONE, AffinityTerm, NodeInfo, PodInfo, first_equality

log = logging.getLogger(__name__)


class LabelGroup:
    """Placed pods sharing one namespace and one exact label set, counted per node."""

    __slots__ = ("domains", "key", "labels", "namespace", "nodes")

    def __init__(self, namespace: str, labels: Mapping[str, str], key: tuple) -> None:
        self.namespace = namespace
        self.labels = dict(labels)
        self.key = key
        self.nodes: dict[str, int] = {}
        # Topology keys -> (topology generation, per key: label value -> pods of this group on nodes
        # carrying every key). Kept up to date as pods are placed, so that topology spreading counts
        # per domain instead of per node; a node change makes the entry stale (recomputed on use).
        self.domains: dict[tuple[str, ...], tuple[int, list[dict[str, int]]]] = {}


class TermGroup:
    """Placed pods carrying one identical affinity term (and weight), counted per node."""

    __slots__ = ("key", "nodes", "term")

    def __init__(self, term: AffinityTerm, key: tuple) -> None:
        self.term = term
        self.key = key
        self.nodes: dict[str, int] = {}


class TermIndex:
    """Term groups of one kind, findable from the labels of a pod they might select."""

    def __init__(self) -> None:
        self.groups: dict[tuple, TermGroup] = {}
        self.by_pair: dict[tuple[str, str], set[tuple]] = {}
        self.unindexed: set[tuple] = set()  # selectors without an equality requirement

    def add(self, term: AffinityTerm, node: str) -> None:
        key = (term.key, term.weight)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = TermGroup(term, key)
            eq = first_equality(term.selector)
            if eq is None:
                self.unindexed.add(key)
            else:
                for value in eq[1]:
                    self.by_pair.setdefault((eq[0], value), set()).add(key)
        group.nodes[node] = group.nodes.get(node, 0) + 1

    def remove(self, term: AffinityTerm, node: str) -> None:
        key = (term.key, term.weight)
        group = self.groups.get(key)
        if group is None:
            return
        left = group.nodes.get(node, 0) - 1
        if left > 0:
            group.nodes[node] = left
        else:
            group.nodes.pop(node, None)
        if not group.nodes:
            del self.groups[key]
            eq = first_equality(term.selector)
            if eq is None:
                self.unindexed.discard(key)
            else:
                for value in eq[1]:
                    keys = self.by_pair.get((eq[0], value))
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del self.by_pair[(eq[0], value)]

    def candidates(self, labels: Mapping[str, str]) -> Iterator[TermGroup]:
        """Groups whose selector might match `labels` (callers still check the term)."""
        if not self.groups:
            return
        seen: set[tuple] = set()
        for pair in labels.items():
            for key in self.by_pair.get(pair, ()):
                if key not in seen:
                    seen.add(key)
                    yield self.groups[key]
        for key in self.unindexed:
            yield self.groups[key]

    def __bool__(self) -> bool:
        return bool(self.groups)


class _PodState:
    __slots__ = ("assumed", "binding_finished", "info")

    def __init__(self, info: PodInfo, assumed: bool) -> None:
        self.info = info
        self.assumed = assumed
        self.binding_finished = False


class Cache:
    """Nodes and placed pods; doubles as the snapshot plugins read during a cycle."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._node_list: list[NodeInfo] | None = []
        self._pods: dict[str, _PodState] = {}
        # Pods whose node object has not arrived yet are kept on a placeholder NodeInfo.
        self._placeholders: dict[str, NodeInfo] = {}
        self.label_groups: dict[tuple, LabelGroup] = {}
        self.label_index: dict[tuple[str, str], set[tuple]] = {}
        self.required_anti_affinity = TermIndex()
        self.required_affinity = TermIndex()
        self.preferred_affinity = TermIndex()
        self.preferred_anti_affinity = TermIndex()
        self.tainted_nodes = 0
        self.prefer_no_schedule_nodes = 0
        self.unschedulable_nodes = 0
        self.image_nodes: dict[str, int] = {}  # image -> number of nodes that have it
        self.generation = 0
        # Topology keys -> (node name -> label values, per-key sets of values); nodes changing clears it.
        self._topology: dict[tuple[str, ...], tuple[dict[str, tuple[str, ...]], list[set[str]]]] = {}
        self._topology_generation = 0  # bumped whenever _topology is cleared

    # ---- nodes

    def add_node(self, node: Mapping) -> NodeInfo:
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is not None:
            self._node_stats(info, -1)
            zone = info.labels.get(LABEL_ZONE)
            info.set_node(node)
            if info.labels.get(LABEL_ZONE) != zone:
                self._node_list = None  # the zone round-robin order changed
        else:
            info = self._placeholders.pop(name, None)
            if info is not None:
                info.set_node(node)
            else:
                info = NodeInfo(node)
            self.nodes[name] = info
            self._node_list = None
        self._node_stats(info, +1)
        self.generation += 1
        return info

    update_node = add_node

    def remove_node(self, name: str) -> None:
        info = self.nodes.pop(name, None)
        if info is None:
            return
        self._node_stats(info, -1)
        self._node_list = None
        if info.pods:
            # Pods still bound there stay counted until their own deletion arrives.
            self._placeholders[name] = info
        self.generation += 1

    def _node_stats(self, info: NodeInfo, sign: int) -> None:
        self._topology.clear()
        self._topology_generation += 1
        if info.schedule_taints:
            self.tainted_nodes += sign
        if info.prefer_no_schedule_taints:
            self.prefer_no_schedule_nodes += sign
        if info.unschedulable:
            self.unschedulable_nodes += sign
        for image in info.image_sizes:
            n = self.image_nodes.get(image, 0) + sign
            if n > 0:
                self.image_nodes[image] = n
            else:
                self.image_nodes.pop(image, None)

    def node_list(self) -> list[NodeInfo]:
        """Nodes ordered round-robin across zones, so a partial search still spans zones
        (Kubernetes' nodeTree)."""
        if self._node_list is None:
            zones: dict[str, list[NodeInfo]] = {}
            for info in sorted(self.nodes.values(), key=lambda n: n.name):
                zones.setdefault(info.labels.get(LABEL_ZONE, ""), []).append(info)
            ordered: list[NodeInfo] = []
            columns = list(zones.values())
            for i in range(max((len(c) for c in columns), default=0)):
                for column in columns:
                    if i < len(column):
                        ordered.append(column[i])
            self._node_list = ordered
        return self._node_list

    def __len__(self) -> int:
        return len(self.nodes)

    def topology(self, keys: tuple[str, ...]) -> tuple[dict[str, tuple[str, ...]], list[set[str]]]:
        """For the nodes carrying every key: their values of the keys, and each key's set of values."""
        cached = self._topology.get(keys)
        if cached is None:
            values: dict[str, tuple[str, ...]] = {}
            domains: list[set[str]] = [set() for _ in keys]
            for info in self.nodes.values():
                labels = info.labels
                if all(k in labels for k in keys):
                    row = tuple(labels[k] for k in keys)
                    values[info.name] = row
                    for i, v in enumerate(row):
                        domains[i].add(v)
            cached = self._topology[keys] = (values, domains)
        return cached

    def domain_counts(self, group: LabelGroup, keys: tuple[str, ...]) -> list[dict[str, int]]:
        """Pods of `group` per value of each of `keys`, over the nodes carrying every key.

        The result is the cache's own, kept current by later placements: callers must not change it.
        """
        entry = group.domains.get(keys)
        if entry is not None and entry[0] == self._topology_generation:
            return entry[1]
        values, _ = self.topology(keys)
        counts: list[dict[str, int]] = [{} for _ in keys]
        for node_name, n in group.nodes.items():
            row = values.get(node_name)
            if row is not None:
                for i, value in enumerate(row):
                    counts[i][value] = counts[i].get(value, 0) + n
        group.domains[keys] = (self._topology_generation, counts)
        return counts

    def _shift_domains(self, group: LabelGroup, node_name: str, sign: int) -> None:
        for keys, (generation, counts) in group.domains.items():
            if generation != self._topology_generation:
                continue  # stale: recomputed from group.nodes when next asked for
            row = self._topology[keys][0].get(node_name)
            if row is not None:
                for i, value in enumerate(row):
                    counts[i][value] = counts[i].get(value, 0) + sign

    # ---- pods

    def _node_for(self, name: str) -> NodeInfo:
        info = self.nodes.get(name) or self._placeholders.get(name)
        if info is None:
            info = self._placeholders[name] = NodeInfo(name=name)
        return info

    def _place(self, pi: PodInfo, node_name: str) -> None:
        self._node_for(node_name).add_pod(pi)
        key = (pi.namespace, frozenset(pi.labels.items()))
        group = self.label_groups.get(key)
        if group is None:
            group = self.label_groups[key] = LabelGroup(pi.namespace, pi.labels, key)
            for pair in pi.labels.items():
                self.label_index.setdefault(pair, set()).add(key)
        group.nodes[node_name] = group.nodes.get(node_name, 0) + 1
        if group.domains:
            self._shift_domains(group, node_name, +1)
        for term in pi.required_anti_affinity_terms:
            self.required_anti_affinity.add(term, node_name)
        for term in pi.required_affinity_terms:
            self.required_affinity.add(term, node_name)
        for term in pi.preferred_affinity_terms:
            self.preferred_affinity.add(term, node_name)
        for term in pi.preferred_anti_affinity_terms:
            self.preferred_anti_affinity.add(term, node_name)
        self.generation += 1

    def _unplace(self, pi: PodInfo, node_name: str) -> None:
        info = self.nodes.get(node_name) or self._placeholders.get(node_name)
        if info is not None:
            info.remove_pod(pi.uid)
            if node_name in self._placeholders and not info.pods:
                del self._placeholders[node_name]
        key = (pi.namespace, frozenset(pi.labels.items()))
        group = self.label_groups.get(key)
        if group is not None:
            if group.domains and node_name in group.nodes:
                self._shift_domains(group, node_name, -1)
            left = group.nodes.get(node_name, 0) - 1
            if left > 0:
                group.nodes[node_name] = left
            else:
                group.nodes.pop(node_name, None)
            if not group.nodes:
                del self.label_groups[key]
                for pair in pi.labels.items():
                    keys = self.label_index.get(pair)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del self.label_index[pair]
        for term in pi.required_anti_affinity_terms:
            self.required_anti_affinity.remove(term, node_name)
        for term in pi.required_affinity_terms:
            self.required_affinity.remove(term, node_name)
        for term in pi.preferred_affinity_terms:
            self.preferred_affinity.remove(term, node_name)
        for term in pi.preferred_anti_affinity_terms:
            self.preferred_anti_affinity.remove(term, node_name)
        self.generation += 1

    def assume_pod(self, pi: PodInfo, node_name: str) -> None:
        """Count `pi` on `node_name` before the binding is confirmed."""
        if pi.uid in self._pods:
            raise ValueError(f"pod {pi.key} is already in the cache")
        pi.node_name = node_name
        self._pods[pi.uid] = _PodState(pi, assumed=True)
        self._place(pi, node_name)

    def finish_binding(self, pi: PodInfo) -> None:
        state = self._pods.get(pi.uid)
        if state is not None and state.assumed:
            state.binding_finished = True

    def forget_pod(self, pi: PodInfo) -> None:
        """Undo `assume_pod` after a failed binding."""
        state = self._pods.get(pi.uid)
        if state is None or not state.assumed:
            return
        del self._pods[pi.uid]
        self._unplace(state.info, state.info.node_name)

    def confirm_assumed(self, uid: str, node_name: str, pod: Mapping) -> bool:
        """The informer reports an assumed pod bound where assumed, unchanged otherwise: keep the
        parsed pod and just mark it confirmed (the common case, and the cheap one)."""
        state = self._pods.get(uid)
        if state is None or not state.assumed or state.info.node_name != node_name:
            return False
        info = state.info
        old = info.pod
        if (old.get("metadata") or {}).get("labels") != (pod.get("metadata") or {}).get("labels"):
            return False
        old_spec, new_spec = old.get("spec") or {}, pod.get("spec") or {}
        if {k: v for k, v in old_spec.items() if k != "nodeName"} != {k: v for k, v in new_spec.items() if k != "nodeName"}:
            return False
        info.pod = pod
        state.assumed = False
        return True

    def is_assumed(self, uid: str) -> bool:
        state = self._pods.get(uid)
        return state is not None and state.assumed

    def add_pod(self, pi: PodInfo) -> None:
        """A bound pod seen by the informer; confirms an assumption, moving it if the node differs."""
        state = self._pods.get(pi.uid)
        if state is not None:
            self._unplace(state.info, state.info.node_name)
        self._pods[pi.uid] = _PodState(pi, assumed=False)
        self._place(pi, pi.node_name)

    def update_pod(self, pi: PodInfo) -> None:
        self.add_pod(pi)

    def remove_pod(self, uid: str) -> PodInfo | None:
        state = self._pods.pop(uid, None)
        if state is None:
            return None
        self._unplace(state.info, state.info.node_name)
        return state.info

    def get_pod(self, uid: str) -> PodInfo | None:
        state = self._pods.get(uid)
        return state.info if state else None

    def pod_count(self) -> int:
        return len(self._pods)

    # ---- index queries

    def label_groups_matching(self, namespaces_ok, selector, hint: tuple[str, tuple[str, ...]] | None
                              ) -> Iterable[LabelGroup]:
        """Label groups whose labels satisfy `selector` and whose namespace `namespaces_ok` accepts."""
        if hint is not None:
            keys: set[tuple] = set()
            for value in hint[1]:
                keys |= self.label_index.get((hint[0], value), set())
            groups = (self.label_groups[k] for k in keys)
        else:
            groups = self.label_groups.values()
        for group in groups:
            if namespaces_ok(group.namespace) and selector.matches(group.labels):
                yield group
