"""Profiles: which plugins run at which extension point, with which score weights; and the runtime
that runs one scheduling cycle through them.

Configuration is a subset of Kubernetes' KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1),
so existing files read the same:

    percentageOfNodesToScore: 0          # 0: adaptive, 50% minus 1% per 125 nodes, at least 5%
    profiles:
    - schedulerName: default-scheduler
      plugins:
        multiPoint: {enabled: [...], disabled: [...]}
        score: {enabled: [{name: NodeResourcesFit, weight: 2}], disabled: [{name: "*"}]}
        filter: {...}
      pluginConfig:
      - name: NodeResourcesFit
        args: {scoringStrategy: {type: MostAllocated}}

The default profile enables every in-tree plugin at the points it implements with Kubernetes'
default weights.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pinnace.scheduler.framework import (
    Code,
    CycleState,
    Handle,
    NodeInfo,
    PodInfo,
    Status,
    error,
    fit_error_message,
    unresolvable,
)
from pinnace.scheduler.registry import DEFAULT_PLUGINS, DEFAULT_WEIGHTS, REGISTRY

DEFAULT_SCHEDULER_NAME = "default-scheduler"
MIN_FEASIBLE_NODES_TO_FIND = 100
NO_NODES_AVAILABLE = "no nodes available to schedule pods"
FILTER_CHUNK = 64  # nodes filtered per batch when fewer remain to be found
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5

EXTENSION_POINTS = ("preFilter", "filter", "postFilter", "preScore", "score", "reserve", "permit", "bind")
_METHODS = {
    "preFilter": "pre_filter",
    "filter": "filter",
    "postFilter": "post_filter",
    "preScore": "pre_score",
    "score": "score",
    "reserve": "reserve",
    "permit": "permit",
    "bind": "bind",
}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class ProfileConfig:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    plugins: dict[str, Any] = field(default_factory=dict)
    plugin_config: dict[str, dict] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


@dataclass
class SchedulerConfig:
    profiles: list[ProfileConfig] = field(default_factory=lambda: [ProfileConfig()])
    percentage_of_nodes_to_score: int = 0
    leader_elect: bool = True
    lease_name: str = "kube-scheduler"
    lease_namespace: str = "kube-system"
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    parallel_bindings: int = 64

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> SchedulerConfig:
        raw = raw or {}
        profiles = [
            ProfileConfig(
                scheduler_name=p.get("schedulerName") or DEFAULT_SCHEDULER_NAME,
                plugins=p.get("plugins") or {},
                plugin_config={c["name"]: c.get("args") or {} for c in p.get("pluginConfig") or ()},
                percentage_of_nodes_to_score=p.get("percentageOfNodesToScore"),
            )
            for p in raw.get("profiles") or ()
        ] or [ProfileConfig()]
        names = [p.scheduler_name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate schedulerName in profiles: {names}")
        leader = raw.get("leaderElection") or {}
        return cls(
            profiles=profiles,
            percentage_of_nodes_to_score=int(raw.get("percentageOfNodesToScore") or 0),
            leader_elect=bool(leader.get("leaderElect", True)),
            lease_name=leader.get("resourceName") or "kube-scheduler",
            lease_namespace=leader.get("resourceNamespace") or "kube-system",
            pod_initial_backoff_seconds=float(raw.get("podInitialBackoffSeconds") or 1),
            pod_max_backoff_seconds=float(raw.get("podMaxBackoffSeconds") or 10),
            parallel_bindings=int(raw.get("parallelBindings") or 64),
        )

    @classmethod
    def from_yaml(cls, text: str) -> SchedulerConfig:
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str) -> SchedulerConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_yaml(f.read())


def _names(entries: Sequence[Mapping] | None) -> list[tuple[str, int | None]]:
    return [(e["name"], e.get("weight")) for e in entries or ()]


def resolve_plugins(config: ProfileConfig) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Plugin names per extension point, and score weights, after applying enabled/disabled lists.

    As in Kubernetes: defaults come first (multiPoint), `disabled: [{name: "*"}]` drops the defaults
    of that point, and enabled plugins are appended in order.
    """
    plugins = config.plugins or {}
    multi = plugins.get("multiPoint") or {}
    multi_disabled = {n for n, _ in _names(multi.get("disabled"))}
    base = [] if "*" in multi_disabled else [n for n in DEFAULT_PLUGINS if n not in multi_disabled]
    weights = dict(DEFAULT_WEIGHTS)
    for name, weight in _names(multi.get("enabled")):
        if name not in base:
            base.append(name)
        if weight is not None:
            weights[name] = int(weight)
    result: dict[str, list[str]] = {}
    for point in EXTENSION_POINTS:
        method = _METHODS[point]
        names = [n for n in base if hasattr(REGISTRY[n], method)]
        section = plugins.get(point) or {}
        disabled = {n for n, _ in _names(section.get("disabled"))}
        if "*" in disabled:
            names = []
        else:
            names = [n for n in names if n not in disabled]
        for name, weight in _names(section.get("enabled")):
            if name not in REGISTRY:
                raise ValueError(f"unknown plugin {name!r} in {point}")
            if name in names:
                names.remove(name)
            names.append(name)
            if weight is not None:
                weights[name] = int(weight)
        result[point] = names
    for point, names in result.items():
        for name in names:
            if name not in REGISTRY:
                raise ValueError(f"unknown plugin {name!r} in {point}")
    return result, weights


# ---------------------------------------------------------------------------------------------
# FitError: why a pod fits nowhere, in Kubernetes' words


class FitError(Exception):
    def __init__(self, pod: PodInfo, num_all_nodes: int, statuses: dict[str, Status],
                 pre_filter_status: Status | None = None) -> None:
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.statuses = statuses
        self.pre_filter_status = pre_filter_status
        self.post_filter_message = ""
        super().__init__()

    @property
    def unschedulable_plugins(self) -> set[str]:
        plugins = {s.plugin for s in self.statuses.values() if s.plugin}
        if self.pre_filter_status is not None and self.pre_filter_status.plugin:
            plugins.add(self.pre_filter_status.plugin)
        return plugins

    def message(self) -> str:
        if self.num_all_nodes == 0:
            return NO_NODES_AVAILABLE
        return fit_error_message(self.num_all_nodes, self.statuses, self.pre_filter_status,
                                 self.post_filter_message)

    def __str__(self) -> str:
        return self.message()


# ---------------------------------------------------------------------------------------------
# The runtime


@dataclass
class ScheduleResult:
    node_name: str
    evaluated_nodes: int
    feasible_nodes: int
    state: CycleState


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int) -> int:
    """How many feasible nodes to look for before scoring (Kubernetes' adaptive percentage)."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if percentage <= 0:
        percentage = 50 - num_all_nodes // 125
        if percentage < MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND:
            percentage = MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND
    if percentage >= 100:
        return num_all_nodes
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


class Framework:
    """One profile's plugins, and the scheduling cycle that runs them."""

    def __init__(self, config: ProfileConfig, handle: Handle, percentage_of_nodes_to_score: int = 0,
                 rng: random.Random | None = None) -> None:
        self.profile_name = config.scheduler_name
        self.handle = handle
        points, weights = resolve_plugins(config)
        instances: dict[str, Any] = {}

        def plugin(name: str) -> Any:
            if name not in instances:
                instances[name] = REGISTRY[name](config.plugin_config.get(name) or {}, handle)
                instances[name].framework = self
            return instances[name]

        self.pre_filter_plugins = [plugin(n) for n in points["preFilter"]]
        self.filter_plugins = [plugin(n) for n in points["filter"]]
        self.post_filter_plugins = [plugin(n) for n in points["postFilter"]]
        self.pre_score_plugins = [plugin(n) for n in points["preScore"]]
        self.score_plugins = [(plugin(n), weights.get(n, 1)) for n in points["score"]]
        self.reserve_plugins = [plugin(n) for n in points["reserve"]]
        self.permit_plugins = [plugin(n) for n in points["permit"]]
        self.bind_plugins = [plugin(n) for n in points["bind"]]
        self.plugins = instances
        self.percentage = (config.percentage_of_nodes_to_score
                           if config.percentage_of_nodes_to_score is not None else percentage_of_nodes_to_score)
        self.next_start_node_index = 0
        self.rng = rng or random.Random()
        self._events: dict[frozenset[str], frozenset[str]] = {}

    # ---- events: which cluster changes may help a pod a plugin rejected

    def events_for(self, plugin_names: set[str]) -> frozenset[str]:
        key = frozenset(plugin_names)
        events = self._events.get(key)
        if events is None:
            collected: set[str] = set()
            for name in plugin_names:
                collected.update(getattr(self.plugins.get(name), "events", ("*",)))
            events = self._events[key] = frozenset(collected)
        return events

    # ---- PreFilter / Filter

    def run_pre_filter(self, state: CycleState, pod: PodInfo) -> tuple[Status | None, set[str] | None]:
        skipped: set[str] = set()
        allowed: set[str] | None = None
        for p in self.pre_filter_plugins:
            result = p.pre_filter(state, pod)
            if result is None:
                continue
            if isinstance(result, set):
                allowed = result if allowed is None else allowed & result
                continue
            if result.code == Code.SKIP:
                skipped.add(p.name)
                continue
            result.plugin = p.name
            if result.code == Code.ERROR:
                return result, None
            return result, None
        state["__skip_filter__"] = skipped
        return None, allowed

    def active_filters(self, state: CycleState) -> list[tuple[str, Any]]:
        skipped = state.get("__skip_filter__", ())
        return [(p.name, p.filter) for p in self.filter_plugins if p.name not in skipped]

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                    filters: list[tuple[str, Any]] | None = None) -> Status | None:
        for name, fn in filters if filters is not None else self.active_filters(state):
            status = fn(state, pod, node)
            if status is not None:
                status.plugin = name
                return status
        return None

    def run_filters_with_nominated(self, state: CycleState, pod: PodInfo, node: NodeInfo,
                                   filters: list[tuple[str, Any]] | None = None) -> Status | None:
        """Filters that also count pods nominated to the node with at least this pod's priority, so
        a preemptor's room is not taken by others (Kubernetes' RunFilterPluginsWithNominatedPods)."""
        nominated_fn = getattr(self.handle, "nominated_pods", None)
        nominated = nominated_fn(node.name) if nominated_fn else ()
        extra = [p for p in nominated if p.uid != pod.uid and p.priority >= pod.priority]
        if extra:
            state2 = state.clone()
            node2 = node.clone()
            for p in extra:
                node2.add_pod(p)
                self.run_add_pod(state2, pod, p, node2)
            status = self.run_filters(state2, pod, node2, filters)
            if status is not None:
                return status
        return self.run_filters(state, pod, node, filters)

    def run_add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        skipped = state.get("__skip_filter__", ())
        for p in self.pre_filter_plugins:
            if p.name not in skipped and hasattr(p, "add_pod"):
                p.add_pod(state, pod, added, node)

    def run_remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        skipped = state.get("__skip_filter__", ())
        for p in self.pre_filter_plugins:
            if p.name not in skipped and hasattr(p, "remove_pod"):
                p.remove_pod(state, pod, removed, node)

    def find_feasible(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
                      ) -> tuple[list[NodeInfo], dict[str, Status]]:
        """Filter nodes, starting where the previous pod stopped, until enough feasible ones are found.

        Same result as checking node after node with every filter (the first rejection is the node's
        status), computed in chunks so that plugins offering `filter_nodes(state, pod, nodes)` run one
        tight loop per chunk instead of one call per node.
        """
        n = len(nodes)
        if n == 0:
            return [], {}
        to_find = num_feasible_nodes_to_find(n, self.percentage)
        start = self.next_start_node_index % n
        order = nodes[start:] + nodes[:start] if start else nodes
        if getattr(self.handle, "has_nominated_pods", lambda: False)():
            return self._find_feasible_one_by_one(state, pod, order, start, to_find)
        skipped = state.get("__skip_filter__", ())
        plugins = [p for p in self.filter_plugins if p.name not in skipped]
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        pos = 0
        processed = n
        while pos < n:
            need = to_find - len(feasible)
            chunk = order[pos:pos + max(need, FILTER_CHUNK)]
            passing = chunk
            rejected: list[tuple[NodeInfo, Status]] = []
            for p in plugins:
                batch = getattr(p, "filter_nodes", None)
                results = batch(state, pod, passing) if batch is not None else [p.filter(state, pod, x) for x in passing]
                # Comprehensions rather than one loop with appends: a selective filter (topology spread)
                # rejects most of a chunk, and this split is then the hottest code of the cycle.
                kept = [node for node, status in zip(passing, results, strict=True) if status is None]
                if len(kept) != len(passing):
                    # Plugins share a few status objects among nodes: check and stamp each once.
                    for status in {id(x): x for x in results if x is not None}.values():
                        if status.code == Code.ERROR:
                            raise RuntimeError(f"filter plugin {p.name} failed: {status.message()}")
                        status.plugin = p.name
                    rejected.extend(pair for pair in zip(passing, results, strict=True) if pair[1] is not None)
                passing = kept
                if not passing:
                    break
            if len(passing) >= need:
                # Enough: stop right after the node that completed the set, as a node-by-node search
                # would, and forget what was learned about the nodes after it.
                last = passing[need - 1]
                cut = next(k for k, node in enumerate(chunk) if node is last)
                feasible.extend(passing[:need])
                later = {id(node) for node in chunk[cut + 1:]}
                for node, status in rejected:
                    if id(node) not in later:
                        statuses[node.name] = status
                processed = pos + cut + 1
                break
            feasible.extend(passing)
            for node, status in rejected:
                statuses[node.name] = status
            pos += len(chunk)
        self.next_start_node_index = (start + processed) % n
        return feasible, statuses

    def _find_feasible_one_by_one(self, state: CycleState, pod: PodInfo, order: list[NodeInfo], start: int,
                                  to_find: int) -> tuple[list[NodeInfo], dict[str, Status]]:
        filters = self.active_filters(state)
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        processed = 0
        for node in order:
            processed += 1
            status = self.run_filters_with_nominated(state, pod, node, filters)
            if status is None:
                feasible.append(node)
                if len(feasible) >= to_find:
                    break
            elif status.code == Code.ERROR:
                raise RuntimeError(f"filter plugin {status.plugin} failed: {status.message()}")
            else:
                statuses[node.name] = status
        self.next_start_node_index = (start + processed) % len(order)
        return feasible, statuses

    # ---- Score

    def prioritize(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        skipped: set[str] = set()
        for p in self.pre_score_plugins:
            status = p.pre_score(state, pod, nodes)
            if status is None:
                continue
            if status.code == Code.SKIP:
                skipped.add(p.name)
            elif status.code == Code.ERROR:
                raise RuntimeError(f"pre-score plugin {p.name} failed: {status.message()}")
        totals = [0] * len(nodes)
        for p, weight in self.score_plugins:
            if p.name in skipped:
                continue
            batch = getattr(p, "score_nodes", None)
            scores = batch(state, pod, nodes) if batch is not None else [p.score(state, pod, n) for n in nodes]
            normalize = getattr(p, "normalize_score", None)
            if normalize is not None:
                normalize(state, pod, scores)
            totals = [t + s * weight for t, s in zip(totals, scores, strict=True)]
        return totals

    def select_host(self, nodes: list[NodeInfo], scores: list[int]) -> str:
        """The best node; ties broken uniformly at random, as Kubernetes does."""
        best = max(scores)
        ties = [i for i, s in enumerate(scores) if s == best]
        return nodes[ties[0] if len(ties) == 1 else ties[self.rng.randrange(len(ties))]].name

    def schedule(self, pod: PodInfo, state: CycleState | None = None) -> ScheduleResult:
        """One scheduling algorithm run (filter, score, select); raises FitError when nothing fits."""
        state = state if state is not None else CycleState()
        snapshot = self.handle.snapshot
        all_nodes = snapshot.node_list()
        if not all_nodes:
            raise FitError(pod, 0, {})
        status, allowed = self.run_pre_filter(state, pod)
        if status is not None:
            if status.code == Code.ERROR:
                raise RuntimeError(f"pre-filter plugin {status.plugin} failed: {status.message()}")
            raise FitError(pod, len(all_nodes), {n.name: status for n in all_nodes}, pre_filter_status=status)
        # A nominated node (set by an earlier preemption) is tried first.
        nominated = ((pod.pod.get("status") or {}).get("nominatedNodeName") or "")
        if nominated and nominated in snapshot.nodes and (allowed is None or nominated in allowed):
            node = snapshot.nodes[nominated]
            if self.run_filters_with_nominated(state, pod, node) is None:
                return ScheduleResult(nominated, 1, 1, state)
        if allowed is not None:
            candidates = [snapshot.nodes[n] for n in allowed if n in snapshot.nodes]
            candidates.sort(key=lambda n: n.name)
        else:
            candidates = all_nodes
        feasible, statuses = self.find_feasible(state, pod, candidates)
        if not feasible:
            if allowed is not None:
                # Nodes the PreFilter ruled out are reported with the reason a filter gives for them.
                for node in all_nodes:
                    if node.name not in allowed:
                        statuses[node.name] = _not_allowed_status(self, pod, node, state)
            raise FitError(pod, len(all_nodes), statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, len(statuses) + 1, 1, state)
        scores = self.prioritize(state, pod, feasible)
        return ScheduleResult(self.select_host(feasible, scores), len(statuses) + len(feasible), len(feasible), state)

    # ---- PostFilter, Reserve, Permit, Bind

    def run_post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]
                        ) -> tuple[str | None, Status | None]:
        last: Status | None = None
        for p in self.post_filter_plugins:
            nominated, status = p.post_filter(state, pod, statuses)
            if status is None or status.is_success():
                return nominated, None
            status.plugin = p.name
            last = status
        return None, last

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for i, p in enumerate(self.reserve_plugins):
            status = p.reserve(state, pod, node_name)
            if status is not None and not status.is_success():
                status.plugin = p.name
                for q in reversed(self.reserve_plugins[: i + 1]):
                    q.unreserve(state, pod, node_name)
                return status
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for p in reversed(self.reserve_plugins):
            p.unreserve(state, pod, node_name)

    def run_permit(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """None to bind now; a rejection; or WAIT naming the waiting plugins, with the longest timeout."""
        waiting: list[str] = []
        timeout = 0.0
        for p in self.permit_plugins:
            status = p.permit(state, pod, node_name)
            if status is None or status.is_success():
                continue
            status.plugin = p.name
            if status.code == Code.WAIT:
                waiting.append(p.name)
                timeout = max(timeout, status.timeout)
                continue
            return status
        if waiting:
            return Status(Code.WAIT, tuple(waiting), waiting[0], timeout)
        return None

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for p in self.bind_plugins:
            status = await p.bind(state, pod, node_name)
            if status is not None and status.code == Code.SKIP:
                continue
            if status is not None:
                status.plugin = p.name
            return status
        return error("no bind plugin bound the pod")


def _not_allowed_status(framework: Framework, pod: PodInfo, node: NodeInfo, state: CycleState) -> Status:
    # Run the filters on the excluded node so the user reads the real reason (e.g. node affinity).
    status = framework.run_filters(state, pod, node)
    if status is not None:
        return status
    return unresolvable("node(s) didn't match the requested node name")
