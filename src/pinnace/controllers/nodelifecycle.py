"""Node lifecycle: notice nodes whose agent went silent, taint them, and evict pods that do not tolerate it.

As in Kubernetes' node lifecycle controller and its NoExecute taint manager:
- A node is healthy while its Lease in `kube-node-lease` (or its Ready condition's heartbeat) keeps
  changing. The age is measured on this process's monotonic clock from the moment a change was *observed*,
  so clock skew between machines does not matter. After `node_monitor_grace_period` (40 s) without a
  change, Ready and the pressure conditions become Unknown (NodeStatusUnknown) and the node's pods are
  marked not ready, so Services stop sending them traffic.
- Ready=Unknown gives the node the `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute);
  Ready=False the `node.kubernetes.io/not-ready` ones; Ready=True neither.
- A pod on a node with NoExecute taints is deleted when its tolerations run out: at once when it
  tolerates none of them, after the smallest `tolerationSeconds` counted from the taint's `timeAdded`,
  never when it tolerates them without a limit. A pod with no toleration at all for not-ready/unreachable
  gets `default_toleration_seconds` (the API server's DefaultTolerationSeconds admission normally adds
  300 s tolerations itself). Its controller then creates a replacement on another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Mapping
from typing import Any

from pinnace.client import Conflict, NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    format_time,
    get_condition,
    is_being_deleted,
    key_of,
    name_of,
    namespace_of,
    parse_time,
)
from pinnace.controllers.pods import is_active

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
LEASE_NAMESPACE = "kube-node-lease"
_UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"  # an empty key with Exists tolerates everything
    if key != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def eviction_delay(pod: Mapping[str, Any], taints: list[Mapping[str, Any]], default_seconds: int,
                   at: float | None = None) -> float | None:
    """Seconds until `pod` must leave a node with these NoExecute taints; None means it may stay forever."""
    at = time.time() if at is None else at
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    delay: float | None = None
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            if taint.get("key") in (UNREACHABLE, NOT_READY):
                seconds: float | None = default_seconds
            else:
                return 0.0
        elif any(t.get("tolerationSeconds") is None for t in matching):
            seconds = None
        else:
            seconds = min(max(0, int(t["tolerationSeconds"])) for t in matching)
        if seconds is None:
            continue
        added = parse_time(taint.get("timeAdded"))
        start = added.timestamp() if added else at
        remaining = max(0.0, start + seconds - at)
        delay = remaining if delay is None else min(delay, remaining)
    return delay


def desired_taints(node: Mapping[str, Any]) -> list[Object]:
    """The node's taints with the not-ready/unreachable ones matching its Ready condition."""
    ready = get_condition(node.get("status"), "Ready")
    state = (ready or {}).get("status", "Unknown" if ready is None else "True")
    wanted_key = {"Unknown": UNREACHABLE, "False": NOT_READY}.get(state)
    if ready is None:
        wanted_key = None  # a node that never reported is not yet ours to judge
    current = list((node.get("spec") or {}).get("taints") or [])
    result = [t for t in current if t.get("key") not in (UNREACHABLE, NOT_READY) or t.get("key") == wanted_key]
    if wanted_key is not None:
        stamp = format_time()
        for effect in ("NoSchedule", "NoExecute"):
            if not any(t.get("key") == wanted_key and t.get("effect") == effect for t in result):
                taint: Object = {"key": wanted_key, "effect": effect}
                if effect == "NoExecute":
                    taint["timeAdded"] = stamp
                result.append(taint)
    return result


class NodeLifecycleController(BaseController):
    name = "nodelifecycle"

    def setup(self) -> None:
        self.nodes = self.informer("v1/nodes")
        self.leases = self.informer("coordination.k8s.io/v1/leases", namespace=LEASE_NAMESPACE)
        self.pods = self.pod_informer()
        # node name -> (last renewal seen, monotonic time we saw it change). A probe cache, as in Kubernetes'
        # nodeHealthMap: it says when *we* last saw the node alive, which the cluster cannot tell us.
        self.observed: dict[str, tuple[Any, float]] = {}
        self.nodes.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                               on_delete=self._node_deleted)
        self.leases.add_handler(on_add=self._lease_event, on_update=lambda old, new: self._lease_event(new))
        self.pods.add_handler(on_add=self._pod_event, on_update=lambda old, new: self._pod_event(new))

    def _node_deleted(self, node: Object) -> None:
        self.observed.pop(name_of(node), None)

    def _lease_event(self, lease: Object) -> None:
        self.enqueue(name_of(lease))

    def _pod_event(self, pod: Object) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and any(t.get("effect") == "NoExecute" for t in self._node_taints(node)):
            self.enqueue(node)

    def _node_taints(self, name: str) -> list[Object]:
        node = self.nodes.get(name)
        return list(((node or {}).get("spec") or {}).get("taints") or [])

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            await super().run()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        """Node health is judged by the passage of time, which produces no events: look periodically."""
        while True:
            await asyncio.sleep(self.config.node_monitor_period)
            for key in self.nodes.keys():
                self.enqueue(key)

    def _last_seen_alive(self, node: Object) -> float:
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name_of(node)}")
        ready = get_condition(node.get("status"), "Ready") or {}
        signal = ((lease or {}).get("spec") or {}).get("renewTime"), ready.get("lastHeartbeatTime"), ready.get("status")
        seen = self.observed.get(name_of(node))
        if seen is None or seen[0] != signal:
            seen = (signal, time.monotonic())
            self.observed[name_of(node)] = seen
        return seen[1]

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            return
        node = copy.deepcopy(node)
        silent_for = time.monotonic() - self._last_seen_alive(node)
        ready = get_condition(node.get("status"), "Ready")
        if silent_for > self.config.node_monitor_grace_period and (ready is None or ready.get("status") != "Unknown"):
            node = await self._mark_unknown(node)
            await self._mark_pods_not_ready(key)
        elif silent_for <= self.config.node_monitor_grace_period:
            self.enqueue_after(key, self.config.node_monitor_grace_period - silent_for + 0.1)
        taints = desired_taints(node)
        if taints != list(node["spec"].get("taints") or []):
            node = await self._write_taints(node, taints)
        await self._evict(node)

    async def _mark_unknown(self, node: Object) -> Object:
        stamp = format_time()
        status = node.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        for type_ in _UNKNOWN_CONDITIONS:
            condition = get_condition(status, type_)
            if condition is None:
                if type_ != "Ready":
                    continue
                condition = {"type": "Ready"}
                conditions.append(condition)
            condition.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                              "message": "Kubelet stopped posting node status.", "lastTransitionTime": stamp})
            condition.setdefault("lastHeartbeatTime", stamp)
        try:
            updated = await self.client.update_status("v1/nodes", node)
        except NotFound:
            return node
        self.record(node, "Normal", "NodeNotReady", f"Node {name_of(node)} status is now: NodeNotReady")
        return updated

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        for pod in self.pods.by_index("node", node_name):
            ready = get_condition(pod.get("status"), "Ready")
            if not is_active(pod) or ready is None or ready.get("status") == "False":
                continue
            conditions = [dict(c) for c in pod["status"].get("conditions") or ()]
            for condition in conditions:
                if condition.get("type") in ("Ready", "ContainersReady"):
                    condition.update({"status": "False", "lastTransitionTime": format_time()})
            try:
                await self.client.patch("v1/pods", name_of(pod), {"status": {"conditions": conditions}},
                                        namespace=namespace_of(pod), patch_type="merge", subresource="status")
            except NotFound:
                pass

    async def _write_taints(self, node: Object, taints: list[Object]) -> Object:
        patch = {"metadata": {"resourceVersion": node["metadata"].get("resourceVersion")},
                 "spec": {"taints": taints or None}}
        return await self.client.patch("v1/nodes", name_of(node), patch, patch_type="merge")

    async def _evict(self, node: Object) -> None:
        taints = [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == "NoExecute"]
        if not taints:
            return
        next_check: float | None = None
        for pod in self.pods.by_index("node", name_of(node)):
            if is_being_deleted(pod) or not is_active(pod):
                continue
            delay = eviction_delay(pod, taints, self.config.default_toleration_seconds)
            if delay is None:
                continue
            if delay > 0:
                next_check = delay if next_check is None else min(next_check, delay)
                continue
            self.record(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {key_of(pod)}")
            try:
                await self.client.delete("v1/pods", name_of(pod), namespace=namespace_of(pod),
                                         preconditions={"uid": pod["metadata"].get("uid")})
            except (NotFound, Conflict):
                pass
        if next_check is not None:
            self.enqueue_after(name_of(node), next_check + 0.05)
