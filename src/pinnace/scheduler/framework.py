"""The scheduling framework: the contract between the scheduler and its plugins.

Shaped like the Kubernetes scheduling framework. A scheduling cycle runs, for one pod:

    PreFilter -> Filter (per node) -> PostFilter (only when no node fits, e.g. preemption)
    -> PreScore -> Score (per node) -> NormalizeScore -> Reserve -> Permit
and then, asynchronously, the binding cycle: Bind (default: POST pods/binding).

A plugin is any object with a `name` and the methods of the extension points it implements; the
runtime (`profile.Framework`) finds them by duck typing, as Go finds them by interface assertion.
`None` means success everywhere a `Status` is returned, as a nil `*Status` does in Kubernetes.

Per-pod and per-node facts that the plugins need on every cycle are computed once and kept here:
`PodInfo` (requests, host ports, parsed affinity terms, tolerations) and `NodeInfo` (allocatable,
requested, taints, used ports, images, the pods on the node). The scheduler's cache keeps one
`NodeInfo` per node up to date incrementally, so a scheduling cycle never copies cluster state.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from pinnace.api.quantity import parse_quantity
from pinnace.api.selectors import LabelSelector, Requirement, label_selector_from_dict

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0

# Requests assumed for a container that states none, used only for scoring so that many
# request-less pods still spread (Kubernetes' DefaultMilliCPURequest / DefaultMemoryRequest).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"


# ---------------------------------------------------------------------------------------------
# Status


class Code(enum.IntEnum):
    """What a plugin's answer means for the pod; the queue and preemption act on it."""

    SUCCESS = 0
    # An internal error: the pod goes to the back-off queue and is retried, not reported as unfit.
    ERROR = 1
    # The pod does not fit now; preemption may help (e.g. not enough cpu).
    UNSCHEDULABLE = 2
    # The pod does not fit and removing pods cannot change that (e.g. node affinity).
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    # Permit: hold the pod before binding until allowed, rejected or timed out.
    WAIT = 4
    # PreFilter/PreScore: this plugin has nothing to do for this pod; its Filter/Score is skipped.
    SKIP = 5


@dataclass(slots=True)
class Status:
    code: Code
    reasons: tuple[str, ...] = ()
    plugin: str = ""
    timeout: float = 0.0  # Permit WAIT only

    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def message(self) -> str:
        return ", ".join(self.reasons)


def unschedulable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE, reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons)


def error(message: str) -> Status:
    return Status(Code.ERROR, (message,))


def wait(timeout: float) -> Status:
    return Status(Code.WAIT, (), "", timeout)


SKIP = Status(Code.SKIP)


class CycleState(dict):
    """Data plugins share within one scheduling cycle (PreFilter computes, Filter reads).

    Keys are plugin names. `clone()` is shallow except for values offering `clone()` themselves, which
    preemption uses to evaluate "what if these pods were gone" without touching the real state.
    """

    def clone(self) -> CycleState:
        copy = CycleState()
        for key, value in self.items():
            clone = getattr(value, "clone", None)
            copy[key] = clone() if callable(clone) else value
        return copy


# ---------------------------------------------------------------------------------------------
# Quantities and requests


@lru_cache(maxsize=4096)
def _milli(value: str) -> int:
    return math.ceil(parse_quantity(value) * 1000)


@lru_cache(maxsize=4096)
def _whole(value: str) -> int:
    return math.ceil(parse_quantity(value))


def milli_cpu(value: Any) -> int:
    return _milli(str(value))


def quantity_int(value: Any) -> int:
    return _whole(str(value))


class Resource:
    """Amounts of cpu (millicores), memory and ephemeral storage (bytes), pods, and scalar resources.

    Scalar resources are extended resources (`example.com/gpu`), hugepages and attachable volumes,
    counted as whole numbers as Kubernetes does.
    """

    __slots__ = ("allowed_pods", "ephemeral_storage", "memory", "milli_cpu", "scalar")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, ephemeral_storage: int = 0,
                 allowed_pods: int = 0, scalar: dict[str, int] | None = None) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.allowed_pods = allowed_pods
        self.scalar = scalar if scalar is not None else {}

    @classmethod
    def from_list(cls, resources: Mapping[str, Any] | None) -> Resource:
        r = cls()
        for name, value in (resources or {}).items():
            r.set(name, value)
        return r

    def set(self, name: str, value: Any) -> None:
        if name == "cpu":
            self.milli_cpu = milli_cpu(value)
        elif name == "memory":
            self.memory = quantity_int(value)
        elif name == "ephemeral-storage":
            self.ephemeral_storage = quantity_int(value)
        elif name == "pods":
            self.allowed_pods = quantity_int(value)
        else:
            self.scalar[name] = quantity_int(value)

    def get(self, name: str) -> int:
        if name == "cpu":
            return self.milli_cpu
        if name == "memory":
            return self.memory
        if name == "ephemeral-storage":
            return self.ephemeral_storage
        if name == "pods":
            return self.allowed_pods
        return self.scalar.get(name, 0)

    def add(self, other: Resource) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        self.ephemeral_storage += other.ephemeral_storage
        self.allowed_pods += other.allowed_pods
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + value

    def sub(self, other: Resource) -> None:
        self.milli_cpu -= other.milli_cpu
        self.memory -= other.memory
        self.ephemeral_storage -= other.ephemeral_storage
        self.allowed_pods -= other.allowed_pods
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) - value

    def set_max(self, other: Resource) -> None:
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral_storage = max(self.ephemeral_storage, other.ephemeral_storage)
        for name, value in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), value)

    def copy(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pods, dict(self.scalar))

    def is_zero(self) -> bool:
        return not (self.milli_cpu or self.memory or self.ephemeral_storage or any(self.scalar.values()))

    def __repr__(self) -> str:
        return (f"Resource(cpu={self.milli_cpu}m, memory={self.memory}, ephemeral={self.ephemeral_storage}, "
                f"pods={self.allowed_pods}, scalar={self.scalar})")


def _container_requests(container: Mapping) -> Resource:
    return Resource.from_list((container.get("resources") or {}).get("requests"))


def _non_zero(container: Mapping) -> tuple[int, int]:
    requests = (container.get("resources") or {}).get("requests") or {}
    cpu = requests.get("cpu")
    memory = requests.get("memory")
    return (milli_cpu(cpu) if cpu is not None else DEFAULT_MILLI_CPU_REQUEST,
            quantity_int(memory) if memory is not None else DEFAULT_MEMORY_REQUEST)


def pod_requests(spec: Mapping) -> Resource:
    """What a pod asks of a node, counted as Kubernetes' resourcehelper.PodRequests does.

    Regular containers add up; a sidecar (init container with restartPolicy Always) runs alongside
    them and adds too; every other init container runs alone, next to the sidecars started before
    it, so the pod needs the larger of the two phases. Pod overhead is added on top.
    """
    total = Resource()
    for c in spec.get("containers") or ():
        total.add(_container_requests(c))
    sidecars = Resource()
    init_peak = Resource()
    for c in spec.get("initContainers") or ():
        req = _container_requests(c)
        if c.get("restartPolicy") == "Always":
            total.add(req)
            sidecars.add(req)
            phase = sidecars.copy()
        else:
            phase = req
            phase.add(sidecars)
        init_peak.set_max(phase)
    total.set_max(init_peak)
    overhead = spec.get("overhead")
    if overhead:
        total.add(Resource.from_list(overhead))
    return total


def pod_non_zero_requests(spec: Mapping) -> tuple[int, int]:
    """Cpu and memory requests with defaults for unset values, for scoring (GetNonzeroRequests)."""
    cpu = memory = 0
    for c in spec.get("containers") or ():
        c_cpu, c_mem = _non_zero(c)
        cpu += c_cpu
        memory += c_mem
    side_cpu = side_mem = 0
    peak_cpu = peak_mem = 0
    for c in spec.get("initContainers") or ():
        c_cpu, c_mem = _non_zero(c)
        if c.get("restartPolicy") == "Always":
            cpu += c_cpu
            memory += c_mem
            side_cpu += c_cpu
            side_mem += c_mem
            phase_cpu, phase_mem = side_cpu, side_mem
        else:
            phase_cpu, phase_mem = c_cpu + side_cpu, c_mem + side_mem
        peak_cpu = max(peak_cpu, phase_cpu)
        peak_mem = max(peak_mem, phase_mem)
    cpu = max(cpu, peak_cpu)
    memory = max(memory, peak_mem)
    overhead = spec.get("overhead") or {}
    if "cpu" in overhead:
        cpu += milli_cpu(overhead["cpu"])
    if "memory" in overhead:
        memory += quantity_int(overhead["memory"])
    return cpu, memory


# ---------------------------------------------------------------------------------------------
# Selectors and affinity terms


MATCH_NOTHING = LabelSelector([], match_nothing=True)


def selector_key(selector: LabelSelector) -> tuple:
    """A hashable identity for a selector, so equal selectors from many pods are grouped once."""
    if selector.match_nothing:
        return ("<nothing>",)
    return tuple(sorted(selector.requirements, key=lambda r: (r.key, r.operator, r.values)))


def first_equality(selector: LabelSelector) -> tuple[str, tuple[str, ...]] | None:
    """A requirement (key, allowed values) every matching label set must satisfy; for index lookups."""
    for r in selector.requirements:
        if r.operator in ("=", "in"):
            return r.key, r.values
    return None


def compile_selector(raw: Mapping | None, labels: Mapping[str, str] | None = None,
                     match_label_keys: Sequence[str] = (), mismatch_label_keys: Sequence[str] = ()) -> LabelSelector:
    """A metav1.LabelSelector where nil selects nothing (affinity terms, spread constraints).

    `matchLabelKeys` / `mismatchLabelKeys` add `key in (pod's value)` / `key notin (pod's value)`
    taken from the incoming pod's own labels, as Kubernetes does at admission.
    """
    if raw is None:
        return MATCH_NOTHING
    selector = label_selector_from_dict(raw)
    if labels is not None and (match_label_keys or mismatch_label_keys):
        extra = [Requirement(k, "in", (labels[k],)) for k in match_label_keys if k in labels]
        extra += [Requirement(k, "notin", (labels[k],)) for k in mismatch_label_keys if k in labels]
        selector = LabelSelector(list(selector.requirements) + extra)
    return selector


class AffinityTerm:
    """A pod (anti-)affinity term, resolved: which pods it selects and over which topology."""

    __slots__ = ("all_namespaces", "key", "namespace_selector", "namespaces", "selector", "topology_key", "weight")

    def __init__(self, raw: Mapping, pod_namespace: str, pod_labels: Mapping[str, str], weight: int = 0) -> None:
        self.selector = compile_selector(raw.get("labelSelector"), pod_labels,
                                         raw.get("matchLabelKeys") or (), raw.get("mismatchLabelKeys") or ())
        self.topology_key: str = raw.get("topologyKey") or ""
        names = raw.get("namespaces") or ()
        ns_selector = raw.get("namespaceSelector")
        # No namespaces and no namespaceSelector means the pod's own namespace; an empty
        # namespaceSelector ({}) means every namespace.
        self.namespaces = frozenset(names) if (names or ns_selector is not None) else frozenset((pod_namespace,))
        self.namespace_selector: LabelSelector | None = None
        self.all_namespaces = False
        if ns_selector is not None:
            compiled = label_selector_from_dict(ns_selector)
            if compiled.empty:
                self.all_namespaces = True
            else:
                self.namespace_selector = compiled
        self.weight = weight
        self.key = (self.namespaces, self.all_namespaces,
                    selector_key(self.namespace_selector) if self.namespace_selector else None,
                    selector_key(self.selector), self.topology_key)

    def matches_namespace(self, namespace: str, namespace_labels: Mapping[str, str] | None) -> bool:
        if self.all_namespaces or namespace in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(namespace_labels or {})

    def matches(self, namespace: str, labels: Mapping[str, str], namespace_labels: Mapping[str, str] | None) -> bool:
        return self.matches_namespace(namespace, namespace_labels) and self.selector.matches(labels)


# ---------------------------------------------------------------------------------------------
# PodInfo / NodeInfo


def _host_ports(spec: Mapping) -> tuple[tuple[str, str, int], ...]:
    ports = []
    for c in spec.get("containers") or ():
        for p in c.get("ports") or ():
            host_port = p.get("hostPort") or 0
            if host_port > 0:
                ports.append((p.get("protocol") or "TCP", p.get("hostIP") or "0.0.0.0", host_port))
    return tuple(ports)


def normalized_image_name(name: str) -> str:
    """`nginx` and `nginx:latest` are one image, as in Kubernetes' ImageLocality."""
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        return name + ":latest"
    return name


class PodInfo:
    """A pod plus what plugins need from it on every cycle, computed once."""

    __slots__ = (
        "deleting",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero_cpu",
        "non_zero_memory",
        "pod",
        "ports",
        "preferred_affinity_terms",
        "preferred_anti_affinity_terms",
        "priority",
        "requests",
        "required_affinity_terms",
        "required_anti_affinity_terms",
        "scheduler_name",
        "start_time",
        "tolerations",
        "uid",
    )

    def __init__(self, pod: Mapping, priority: int | None = None) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.namespace: str = meta.get("namespace") or "default"
        self.name: str = meta.get("name") or ""
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid") or self.key
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.deleting = bool(meta.get("deletionTimestamp"))
        self.node_name: str = spec.get("nodeName") or ""
        self.scheduler_name: str = spec.get("schedulerName") or "default-scheduler"
        self.priority: int = priority if priority is not None else int(spec.get("priority") or 0)
        self.requests = pod_requests(spec)
        self.non_zero_cpu, self.non_zero_memory = pod_non_zero_requests(spec)
        self.ports = _host_ports(spec)
        self.tolerations: list[Mapping] = spec.get("tolerations") or []
        self.start_time: str = (pod.get("status") or {}).get("startTime") or meta.get("creationTimestamp") or ""
        affinity = spec.get("affinity") or {}
        pa = affinity.get("podAffinity") or {}
        paa = affinity.get("podAntiAffinity") or {}
        ns, labels = self.namespace, self.labels
        self.required_affinity_terms = [
            AffinityTerm(t, ns, labels) for t in pa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()]
        self.required_anti_affinity_terms = [
            AffinityTerm(t, ns, labels) for t in paa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()]
        self.preferred_affinity_terms = [
            AffinityTerm(t.get("podAffinityTerm") or {}, ns, labels, int(t.get("weight") or 0))
            for t in pa.get("preferredDuringSchedulingIgnoredDuringExecution") or ()]
        self.preferred_anti_affinity_terms = [
            AffinityTerm(t.get("podAffinityTerm") or {}, ns, labels, int(t.get("weight") or 0))
            for t in paa.get("preferredDuringSchedulingIgnoredDuringExecution") or ()]

    @property
    def spec(self) -> Mapping:
        return self.pod.get("spec") or {}

    def has_affinity(self) -> bool:
        return bool(self.required_affinity_terms or self.required_anti_affinity_terms
                    or self.preferred_affinity_terms or self.preferred_anti_affinity_terms)

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class NodeInfo:
    """A node and everything scheduled onto it (bound or assumed), aggregated incrementally."""

    __slots__ = (
        "allocatable", "fields", "generation", "image_sizes", "labels", "name", "node", "non_zero_cpu",
        "non_zero_memory", "pods", "pods_with_affinity", "pods_with_required_anti_affinity",
        "prefer_no_schedule_taints", "requested", "schedule_taints", "taints", "unschedulable", "used_ports",
    )

    def __init__(self, node: Mapping | None = None, name: str = "") -> None:
        self.node: Mapping = {}
        self.name = name
        self.labels: dict[str, str] = {}
        self.fields: dict[str, str] = {"metadata.name": name}
        self.taints: list[Mapping] = []
        self.schedule_taints: list[Mapping] = []  # NoSchedule + NoExecute: the ones Filter checks
        self.prefer_no_schedule_taints: list[Mapping] = []
        self.unschedulable = False
        self.allocatable = Resource()
        self.image_sizes: dict[str, int] = {}
        self.requested = Resource()
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.pods_with_affinity = 0
        self.pods_with_required_anti_affinity = 0
        self.used_ports: dict[tuple[str, str, int], int] = {}
        self.generation = 0
        if node is not None:
            self.set_node(node)

    def set_node(self, node: Mapping) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.name = meta.get("name") or self.name
        self.fields = {"metadata.name": self.name}
        self.labels = meta.get("labels") or {}
        self.taints = spec.get("taints") or []
        self.schedule_taints = [t for t in self.taints if t.get("effect") in ("NoSchedule", "NoExecute")]
        self.prefer_no_schedule_taints = [t for t in self.taints if t.get("effect") == "PreferNoSchedule"]
        self.unschedulable = bool(spec.get("unschedulable"))
        self.allocatable = Resource.from_list(status.get("allocatable") or status.get("capacity"))
        sizes: dict[str, int] = {}
        for image in status.get("images") or ():
            size = int(image.get("sizeBytes") or 0)
            for name in image.get("names") or ():
                sizes[normalized_image_name(name)] = size
        self.image_sizes = sizes
        self.generation += 1

    def add_pod(self, pi: PodInfo) -> None:
        self.pods[pi.uid] = pi
        self.requested.add(pi.requests)
        self.non_zero_cpu += pi.non_zero_cpu
        self.non_zero_memory += pi.non_zero_memory
        for port in pi.ports:
            self.used_ports[port] = self.used_ports.get(port, 0) + 1
        if pi.has_affinity():
            self.pods_with_affinity += 1
        if pi.required_anti_affinity_terms:
            self.pods_with_required_anti_affinity += 1
        self.generation += 1

    def remove_pod(self, uid: str) -> PodInfo | None:
        pi = self.pods.pop(uid, None)
        if pi is None:
            return None
        self.requested.sub(pi.requests)
        self.non_zero_cpu -= pi.non_zero_cpu
        self.non_zero_memory -= pi.non_zero_memory
        for port in pi.ports:
            left = self.used_ports.get(port, 0) - 1
            if left > 0:
                self.used_ports[port] = left
            else:
                self.used_ports.pop(port, None)
        if pi.has_affinity():
            self.pods_with_affinity -= 1
        if pi.required_anti_affinity_terms:
            self.pods_with_required_anti_affinity -= 1
        self.generation += 1
        return pi

    def clone(self) -> NodeInfo:
        """A copy whose pod set can change without touching this one (preemption dry runs)."""
        c = NodeInfo.__new__(NodeInfo)
        for slot in NodeInfo.__slots__:
            setattr(c, slot, getattr(self, slot))
        c.requested = self.requested.copy()
        c.pods = dict(self.pods)
        c.used_ports = dict(self.used_ports)
        return c

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)})"


# ---------------------------------------------------------------------------------------------
# Plugin protocols (extension points)


class Plugin(Protocol):
    name: str


@runtime_checkable
class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        """Check the pod once before looking at nodes; may compute state for Filter.

        Returns None (go on), SKIP (this plugin's Filter has nothing to check for this pod), a
        rejection (no node can fit) or a set of node names that are the only candidates.
        """


@runtime_checkable
class PreFilterExtensions(Protocol):
    """Lets preemption ask "what if this pod were added/removed" of a PreFilter's cycle state."""

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None: ...

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None: ...


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """None if the pod may run on the node, else a rejection with reasons users will read."""


@runtime_checkable
class PostFilterPlugin(Protocol):
    name: str

    def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]) -> tuple[str | None, Status | None]:
        """Runs when no node fits (preemption): returns a nominated node name and a status."""


@runtime_checkable
class PreScorePlugin(Protocol):
    name: str

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        """Prepare scoring for the feasible nodes; SKIP means this plugin's Score is not needed."""


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        """A score for one feasible node; higher is better. Plugins may also offer a faster
        `score_nodes(state, pod, nodes) -> list[int]`, which the runtime prefers."""


@runtime_checkable
class NormalizeScorePlugin(Protocol):
    name: str

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        """Rescale the raw scores (aligned with the scored nodes) in place to 0..MAX_NODE_SCORE."""


@runtime_checkable
class ReservePlugin(Protocol):
    name: str

    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None: ...

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None: ...


@runtime_checkable
class PermitPlugin(Protocol):
    name: str

    def permit(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """None to bind now, a rejection to give up, or `wait(timeout)` to hold the pod."""


@runtime_checkable
class BindPlugin(Protocol):
    name: str

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """Bind the pod; SKIP lets the next Bind plugin do it."""


class Handle(Protocol):
    """What the scheduler offers plugins: the cluster snapshot and a few lookups.

    The scheduler's handle also has `client` (the API client, for Bind plugins),
    `nominated_pods(node_name)` / `has_nominated_pods()` (preemptors waiting for room) and
    `get_waiting_pod(uid)` (pods held at Permit, to `allow(plugin)` or `reject(plugin, message)`);
    plugins must treat those as optional, as SimpleHandle lacks them.
    """

    snapshot: Any  # pinnace.scheduler.cache.Cache

    def namespace_labels(self, namespace: str) -> Mapping[str, str]: ...

    def pod_disruption_budgets(self) -> list[Mapping]: ...


PluginFactory = Callable[[Mapping[str, Any], Handle], Any]


@dataclass
class SimpleHandle:
    """A Handle for tests and tools: a snapshot plus static namespace labels and PDBs."""

    snapshot: Any
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pdbs: list[Mapping] = field(default_factory=list)
    client: Any = None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.namespaces.get(namespace) or {"kubernetes.io/metadata.name": namespace}

    def pod_disruption_budgets(self) -> list[Mapping]:
        return self.pdbs


def default_normalize_score(scores: list[int], reverse: bool = False) -> None:
    """Scale to 0..100 by the maximum (Kubernetes' helper.DefaultNormalizeScore)."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        s = MAX_NODE_SCORE * s // top
        scores[i] = MAX_NODE_SCORE - s if reverse else s


def reason_histogram(statuses: Mapping[str, Status]) -> str:
    counts: dict[str, int] = {}
    for status in statuses.values():
        for reason in status.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    # Kubernetes sorts the "<count> <reason>" strings themselves.
    return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))


def fit_error_message(num_all_nodes: int, statuses: Mapping[str, Status], pre_filter_status: Status | None = None,
                      post_filter_message: str = "") -> str:
    """`0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu.`"""
    message = f"0/{num_all_nodes} nodes are available:"
    if pre_filter_status is not None and pre_filter_status.message():
        message += f" {pre_filter_status.message()}."
    else:
        histogram = reason_histogram(statuses)
        if histogram:
            message += f" {histogram}."
    if post_filter_message:
        message += f" {post_filter_message}"
    return message


