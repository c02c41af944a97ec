"""Pods, nodes and a scheduling snapshot as plain dicts, for table-driven plugin tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from pinnace.scheduler.cache import Cache
from pinnace.scheduler.framework import CycleState, NodeInfo, PodInfo, SimpleHandle
from pinnace.scheduler.profile import Framework, ProfileConfig

_uids = itertools.count()


def node(name: str = "n1", cpu: str = "4", memory: str = "8Gi", pods: int = 110, labels: Mapping | None = None,
         taints: Sequence[Mapping] | None = None, unschedulable: bool = False, images: Sequence[tuple] = (),
         extended: Mapping[str, str] | None = None, ephemeral: str | None = None, zone: str | None = None) -> dict:
    allocatable: dict[str, Any] = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    if ephemeral is not None:
        allocatable["ephemeral-storage"] = ephemeral
    allocatable.update(extended or {})
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if zone is not None:
        all_labels["topology.kubernetes.io/zone"] = zone
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable),
                   "images": [{"names": list(names), "sizeBytes": size} for names, size in images]},
    }
    if taints:
        obj["spec"]["taints"] = list(taints)
    if unschedulable:
        obj["spec"]["unschedulable"] = True
    return obj


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> dict:
    t = {"key": key, "effect": effect}
    if value:
        t["value"] = value
    return t


def container(cpu: str | None = None, memory: str | None = None, extended: Mapping[str, str] | None = None,
              image: str = "busybox", ports: Sequence[Mapping] = (), restart_policy: str | None = None,
              ephemeral: str | None = None) -> dict:
    requests: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    if ephemeral is not None:
        requests["ephemeral-storage"] = ephemeral
    requests.update(extended or {})
    c: dict[str, Any] = {"name": f"c{next(_uids)}", "image": image}
    if requests:
        c["resources"] = {"requests": requests}
    if ports:
        c["ports"] = list(ports)
    if restart_policy:
        c["restartPolicy"] = restart_policy
    return c


def pod(name: str | None = None, namespace: str = "default", cpu: str | None = None, memory: str | None = None,
        labels: Mapping | None = None, node_name: str | None = None, priority: int | None = None,
        containers: Sequence[Mapping] | None = None, init_containers: Sequence[Mapping] = (),
        overhead: Mapping | None = None, node_selector: Mapping | None = None, affinity: Mapping | None = None,
        tolerations: Sequence[Mapping] = (), spread: Sequence[Mapping] = (), extended: Mapping | None = None,
        ports: Sequence[Mapping] = (), image: str = "busybox", scheduler_name: str | None = None,
        deleting: bool = False, preemption_policy: str | None = None, nominated: str | None = None,
        start_time: str | None = None) -> dict:
    n = next(_uids)
    name = name or f"p{n}"
    spec: dict[str, Any] = {
        "containers": list(containers) if containers is not None
        else [container(cpu, memory, extended, image=image, ports=ports)],
    }
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if overhead:
        spec["overhead"] = dict(overhead)
    if node_name:
        spec["nodeName"] = node_name
    if priority is not None:
        spec["priority"] = priority
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if affinity:
        spec["affinity"] = affinity
    if tolerations:
        spec["tolerations"] = list(tolerations)
    if spread:
        spec["topologySpreadConstraints"] = list(spread)
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if preemption_policy:
        spec["preemptionPolicy"] = preemption_policy
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}-{n}",
                            "labels": dict(labels or {}), "creationTimestamp": f"2026-01-01T00:00:{n % 60:02d}Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {}
    if nominated:
        status["nominatedNodeName"] = nominated
    if start_time:
        status["startTime"] = start_time
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def node_info(obj: Mapping, *pods: Mapping) -> NodeInfo:
    info = NodeInfo(obj)
    for p in pods:
        info.add_pod(PodInfo(p))
    return info


def cluster(nodes: Sequence[Mapping], placed: Mapping[str, Sequence[Mapping]] | None = None,
            namespaces: Mapping[str, Mapping[str, str]] | None = None, pdbs: Sequence[Mapping] = ()
            ) -> SimpleHandle:
    """A handle whose snapshot has `nodes` and, per node name, the pods placed there."""
    cache = Cache()
    for n in nodes:
        cache.add_node(n)
    for node_name, pods in (placed or {}).items():
        for p in pods:
            p = dict(p)
            p["spec"] = {**p["spec"], "nodeName": node_name}
            cache.add_pod(PodInfo(p))
    ns = {k: dict(v) for k, v in (namespaces or {}).items()}
    return SimpleHandle(cache, ns, list(pdbs))


def framework(handle: SimpleHandle, plugins: Mapping | None = None, plugin_config: Mapping | None = None,
              percentage: int = 0, seed: int = 1) -> Framework:
    import random

    config = ProfileConfig(plugins=dict(plugins or {}), plugin_config=dict(plugin_config or {}))
    return Framework(config, handle, percentage, rng=random.Random(seed))


def run_filter(plugin: Any, p: Mapping, handle: SimpleHandle) -> dict[str, str | None]:
    """PreFilter then Filter on every node: node name -> first reason (None when the node fits)."""
    pi = PodInfo(p)
    state = CycleState()
    pre = plugin.pre_filter(state, pi) if hasattr(plugin, "pre_filter") else None
    result: dict[str, str | None] = {}
    for info in handle.snapshot.node_list():
        if pre is not None and not isinstance(pre, set) and pre.code != 5:  # rejected in PreFilter
            result[info.name] = pre.reasons[0]
            continue
        if isinstance(pre, set) and info.name not in pre:
            result[info.name] = "<prefilter>"
            continue
        status = plugin.filter(state, pi, info)
        result[info.name] = status.reasons[0] if status is not None else None
    return result


def run_score(plugin: Any, p: Mapping, handle: SimpleHandle) -> dict[str, int]:
    """PreScore, Score and NormalizeScore over every node: node name -> final score."""
    pi = PodInfo(p)
    state = CycleState()
    nodes = handle.snapshot.node_list()
    if hasattr(plugin, "pre_filter"):
        plugin.pre_filter(state, pi)
    if hasattr(plugin, "pre_score"):
        status = plugin.pre_score(state, pi, nodes)
        if status is not None and status.code == 5:
            return {n.name: 0 for n in nodes}
    batch = getattr(plugin, "score_nodes", None)
    scores = batch(state, pi, nodes) if batch else [plugin.score(state, pi, n) for n in nodes]
    if hasattr(plugin, "normalize_score"):
        plugin.normalize_score(state, pi, scores)
    return {n.name: s for n, s in zip(nodes, scores, strict=True)}
