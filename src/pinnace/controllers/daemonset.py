"""DaemonSet: one pod on every eligible node, following nodes as they join and leave.

A node is eligible when the pod template's nodeSelector and required node affinity match it and the
pod tolerates its NoSchedule/NoExecute taints (DaemonSet pods tolerate not-ready, unreachable,
unschedulable and the pressure taints automatically, as in Kubernetes). Pods are placed directly
(`spec.nodeName`), so a DaemonSet does not depend on the scheduler: that is what lets it run node-level
plumbing before scheduling works. Extra, failed and misplaced pods are deleted.
RollingUpdate replaces pods whose `controller-revision-hash` is old, at most `maxUnavailable` (1) nodes
without an available pod at a time; OnDelete waits for the user to delete them. Templates are recorded as
ControllerRevisions (see `pinnace.controllers.history`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from pinnace.client import ApiError, NotFound
from pinnace.controllers import history
from pinnace.controllers.base import BaseController
from pinnace.controllers.expectations import Expectations
from pinnace.controllers.nodelifecycle import tolerates
from pinnace.controllers.objects import (
    CONTROLLER_REVISION_HASH,
    Object,
    generation_of,
    is_being_deleted,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    scaled_value,
    status_equal,
    uid_of,
)
from pinnace.controllers.pods import is_active, is_available, is_ready, phase_of, pod_from_template

DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def _expression_matches(expression: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, operator = expression.get("key"), expression.get("operator")
    wanted = expression.get("values") or []
    present = key in values
    if operator == "In":
        return present and values[key] in wanted
    if operator == "NotIn":
        return not present or values[key] not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and wanted:
        try:
            number, limit = int(values[key]), int(wanted[0])
        except ValueError:
            return False
        return number > limit if operator == "Gt" else number < limit
    return False


def node_matches(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector and required node affinity (terms ORed, expressions and fields ANDed)."""
    labels = labels_of(node)
    if not all(labels.get(k) == v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": name_of(node)}
    return any(all(_expression_matches(e, labels) for e in term.get("matchExpressions") or ())
               and all(_expression_matches(e, fields) for e in term.get("matchFields") or ())
               and (term.get("matchExpressions") or term.get("matchFields"))
               for term in terms)


def should_run(template_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    if not node_matches(template_spec, node):
        return False
    tolerations = [*(template_spec.get("tolerations") or []), *DAEMON_TOLERATIONS]
    for taint in (node.get("spec") or {}).get("taints") or ():
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return False
    return True


class DaemonSetController(BaseController):
    name = "daemonset"

    def setup(self) -> None:
        self.expectations = Expectations()
        self.daemonsets = self.indexed_informer("apps/v1/daemonsets")
        self.nodes = self.informer("v1/nodes")
        self.pods = self.pod_informer()
        self.revisions = self.indexed_informer(history.RESOURCE)
        self.daemonsets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.nodes.add_handler(on_add=self._all, on_update=self._node_updated, on_delete=self._all)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated,
                              on_delete=self._pod_deleted)

    def _all(self, _node: Object) -> None:
        for key in self.daemonsets.keys():
            self.enqueue(key)

    def _node_updated(self, old: Object, new: Object) -> None:
        if labels_of(old) != labels_of(new) or (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get(
                "taints"):
            self._all(new)

    def _pod_event(self, pod: Object) -> None:
        key = self.owner_key(pod, "DaemonSet", "apps")
        if key is not None:
            self.enqueue(key)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = self.owner_key(new, "DaemonSet", "apps")
        if key is not None and is_being_deleted(new) and not is_being_deleted(old):
            self.expectations.deletion_observed(key, uid_of(new))  # graceful: going counts as gone
        self._pod_event(new)

    def _pod_added(self, pod: Object) -> None:
        key = self.owner_key(pod, "DaemonSet", "apps")
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue(key)

    def _pod_deleted(self, pod: Object) -> None:
        key = self.owner_key(pod, "DaemonSet", "apps")
        if key is not None:
            self.expectations.deletion_observed(key, uid_of(pod))
            self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        cached = self.daemonsets.get(key)
        if cached is None or is_being_deleted(cached):
            return
        ds = copy.deepcopy(cached)
        spec = ds["spec"]
        revisions = list(self.revisions.by_index("owner", uid_of(ds)))
        current, revisions = await history.sync_revisions(self.client, ds, revisions)
        digest = history.template_hash(spec["template"])
        pods = await self.claim(ds, self.pods.by_index("namespace", namespace_of(ds) or ""), "v1/pods",
                                spec.get("selector"))
        by_node: dict[str, list[Object]] = {}
        for pod in pods:
            by_node.setdefault((pod.get("spec") or {}).get("nodeName") or "", []).append(pod)
        nodes = {name_of(n): n for n in self.nodes.list()}
        eligible = {name for name, node in nodes.items() if should_run(spec["template"].get("spec") or {}, node)}
        creates: list[str] = []
        deletes: list[Object] = []
        for node_name, node_pods in by_node.items():
            if node_name not in eligible:
                deletes.extend(p for p in node_pods if not is_being_deleted(p))
        for node_name in eligible:
            node_pods = [p for p in by_node.get(node_name, []) if not is_being_deleted(p)]
            failed = [p for p in node_pods if phase_of(p) == "Failed"]
            deletes.extend(failed)
            running = sorted((p for p in node_pods if is_active(p)),
                             key=lambda p: p["metadata"].get("creationTimestamp") or "")
            if not running and not failed and not any(is_being_deleted(p) for p in by_node.get(node_name, [])):
                creates.append(node_name)
            deletes.extend(running[1:])  # keep the oldest
        min_ready = int(spec.get("minReadySeconds") or 0)
        strategy = spec.get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate" and not creates:
            deletes.extend(self._rolling_victims(ds, eligible, by_node, digest, min_ready, set(map(uid_of, deletes))))
        if self.expectations.satisfied(key):
            # Only act on a cache that has seen our last writes, or a node would get two pods.
            self.expectations.expect_creations(key, len(creates))
            self.expectations.expect_deletions(key, [uid_of(p) for p in deletes])
            await asyncio.gather(*(self._create(ds, node, digest) for node in creates))
            for pod in deletes:
                try:
                    await self.client.delete("v1/pods", name_of(pod), namespace=namespace_of(pod))
                except NotFound:
                    self.expectations.deletion_observed(key, uid_of(pod))
        await history.trim_history(self.client, ds, revisions, {name_of(current)} | {
            f"{name_of(ds)}-{labels_of(p).get(CONTROLLER_REVISION_HASH)}" for p in pods})
        await self._status(ds, eligible, by_node, digest, min_ready)
        if min_ready:
            self.enqueue_after(key, min_ready + 0.1)

    def _rolling_victims(self, ds: Object, eligible: set[str], by_node: dict[str, list[Object]], digest: str,
                         min_ready: int, already: set[str]) -> list[Object]:
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        budget = scaled_value(rolling.get("maxUnavailable"), len(eligible), round_up=True, default=1) or 1
        unavailable, old_available, old_unavailable = 0, [], []
        for node_name in sorted(eligible):
            pods = [p for p in by_node.get(node_name, []) if is_active(p)]
            pod = pods[0] if pods else None
            available = pod is not None and is_available(pod, min_ready)
            if not available:
                unavailable += 1
            if pod is not None and labels_of(pod).get(CONTROLLER_REVISION_HASH) != digest and uid_of(pod) not in already:
                (old_available if available else old_unavailable).append(pod)
        # Old pods that are not available cost nothing to replace; available ones only within the budget.
        return old_unavailable + old_available[: max(0, budget - unavailable)]

    async def _create(self, ds: Object, node: str, digest: str) -> None:
        pod = pod_from_template(ds["spec"]["template"], ds, namespace=namespace_of(ds) or "default",
                                extra_labels={CONTROLLER_REVISION_HASH: digest})
        spec = pod["spec"]
        spec["nodeName"] = node
        tolerations = spec.setdefault("tolerations", [])
        for toleration in DAEMON_TOLERATIONS:
            if toleration not in tolerations:
                tolerations.append(dict(toleration))
        try:
            created = await self.client.create("v1/pods", pod, namespace=namespace_of(ds))
        except ApiError:
            self.expectations.creation_observed(key_of(ds))  # no pod, so no event to wait for
            raise
        self.record(ds, "Normal", "SuccessfulCreate", f"Created pod: {name_of(created)}")

    async def _status(self, ds: Object, eligible: set[str], by_node: dict[str, list[Object]], digest: str,
                      min_ready: int) -> None:
        scheduled = [n for n in eligible if any(is_active(p) for p in by_node.get(n, []))]
        pods = [p for n in eligible for p in by_node.get(n, []) if is_active(p)]
        misscheduled = sum(1 for n, ps in by_node.items() if n not in eligible and any(is_active(p) for p in ps))
        available = sum(1 for p in pods if is_available(p, min_ready))
        status = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": misscheduled,
            "numberReady": sum(1 for p in pods if is_ready(p)),
            "numberAvailable": available,
            "numberUnavailable": max(0, len(eligible) - available),
            "updatedNumberScheduled": sum(1 for p in pods if labels_of(p).get(CONTROLLER_REVISION_HASH) == digest),
            "observedGeneration": generation_of(ds),
        }
        if status_equal(status, ds.get("status")):
            return
        try:
            await self.client.patch("apps/v1/daemonsets", name_of(ds), {"status": status}, namespace=namespace_of(ds),
                                    patch_type="merge", subresource="status")
        except NotFound:
            pass
