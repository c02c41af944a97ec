"""StatefulSet: pods with stable names `<set>-0 .. <set>-(N-1)`, stable hostnames and their own volumes.

As Kubernetes' StatefulSet controller:
- Each pod is `<set>-<ordinal>` with hostname = its name and subdomain = `serviceName`, labelled
  `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and `controller-revision-hash`;
  each volumeClaimTemplate becomes a PersistentVolumeClaim `<claim>-<set>-<ordinal>` that outlives the pod.
- OrderedReady (default): pod N is created only when 0..N-1 are Running and Ready; scaling down removes the
  highest ordinal first, one at a time, only while all others are healthy. Parallel: all at once.
- RollingUpdate replaces, from the highest ordinal down to `partition`, one pod at a time, each pod whose
  revision is not the update revision, waiting for the replacement to be Ready. Pods below the partition
  are (re)created from the current revision. OnDelete waits for the user.
- Revisions are ControllerRevisions (see `pinnace.controllers.history`); rolling back is a template change
  back to an older revision, which the history re-uses.
- Failed pods are deleted and re-created under the same name.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pinnace.client import AlreadyExists, NotFound
from pinnace.controllers import history
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    CONTROLLER_REVISION_HASH,
    Object,
    generation_of,
    is_being_deleted,
    labels_of,
    name_of,
    namespace_of,
    status_equal,
    uid_of,
)
from pinnace.controllers.pods import is_active, is_available, is_ready, phase_of, pod_from_template

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal_of(set_name: str, pod: Mapping[str, Any]) -> int | None:
    match = re.fullmatch(rf"{re.escape(set_name)}-(\d+)", pod["metadata"]["name"])
    return int(match.group(1)) if match else None


def healthy(pod: Mapping[str, Any] | None) -> bool:
    return pod is not None and is_active(pod) and phase_of(pod) == "Running" and is_ready(pod)


class StatefulSetController(BaseController):
    name = "statefulset"

    def setup(self) -> None:
        self.sets = self.indexed_informer("apps/v1/statefulsets")
        self.pods = self.pod_informer()
        self.revisions = self.indexed_informer(history.RESOURCE)
        self.sets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.pods.add_handler(on_add=self._pod_event, on_update=lambda old, new: self._pod_event(new),
                              on_delete=self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        key = self.owner_key(pod, "StatefulSet", "apps")
        if key is not None:
            self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        cached = self.sets.get(key)
        if cached is None or is_being_deleted(cached):
            return
        sts = copy.deepcopy(cached)
        spec = sts["spec"]
        name = name_of(sts)
        revisions = list(self.revisions.by_index("owner", uid_of(sts)))
        update_revision, revisions = await history.sync_revisions(self.client, sts, revisions)
        update_hash = history.template_hash(spec["template"])
        status = sts.get("status") or {}
        current_name = status.get("currentRevision") or name_of(update_revision)
        current_revision = next((r for r in revisions if name_of(r) == current_name), update_revision)
        pods = await self.claim(sts, self.pods.by_index("namespace", namespace_of(sts) or ""), "v1/pods",
                                spec.get("selector"))
        by_ordinal = {o: p for p in pods if (o := ordinal_of(name, p)) is not None}
        replicas = spec.get("replicas", 1)
        parallel = spec.get("podManagementPolicy") == "Parallel"
        strategy = spec.get("updateStrategy") or {}
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        # 1. Replace failed pods, create missing ones (in order unless Parallel).
        for ordinal in range(replicas):
            pod = by_ordinal.get(ordinal)
            if pod is not None and phase_of(pod) == "Failed" and not is_being_deleted(pod):
                await self._delete(pod)
                if not parallel:
                    break
                continue
            if pod is None:
                revision = update_revision if ordinal >= partition else current_revision
                await self._create(sts, ordinal, revision)
                if not parallel:
                    break
                continue
            if not parallel and not healthy(pod):
                break  # OrderedReady: nothing above an unhealthy pod changes
        else:
            # 2. Scale down: highest ordinal first.
            condemned = sorted((o for o in by_ordinal if o >= replicas), reverse=True)
            others_healthy = all(healthy(by_ordinal.get(o)) for o in range(replicas))
            for ordinal in condemned:
                pod = by_ordinal[ordinal]
                if is_being_deleted(pod):
                    if not parallel:
                        break
                    continue
                if parallel or others_healthy:
                    await self._delete(pod)
                if not parallel:
                    break
            # 3. Rolling update: one pod at a time from the top, down to the partition.
            if not condemned and (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
                if all(healthy(by_ordinal.get(o)) for o in range(replicas)):
                    for ordinal in range(replicas - 1, partition - 1, -1):
                        pod = by_ordinal[ordinal]
                        if labels_of(pod).get(CONTROLLER_REVISION_HASH) != update_hash:
                            await self._delete(pod)
                            break
        await history.trim_history(self.client, sts, revisions, {name_of(update_revision), current_name})
        await self._status(sts, pods, update_revision, current_name, update_hash, revisions)

    def _pod(self, sts: Object, ordinal: int, revision: Object) -> Object:
        name = f"{name_of(sts)}-{ordinal}"
        template = history.template_of(revision) or sts["spec"]["template"]
        digest = history.template_hash(template)
        pod = pod_from_template(template, sts, namespace=namespace_of(sts) or "default", name=name,
                                extra_labels={POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
                                              CONTROLLER_REVISION_HASH: digest})
        pod["spec"]["hostname"] = name
        if sts["spec"].get("serviceName"):
            pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
        volumes = pod["spec"].setdefault("volumes", [])
        for claim in sts["spec"].get("volumeClaimTemplates") or ():
            claim_name = claim["metadata"]["name"]
            volumes[:] = [v for v in volumes if v.get("name") != claim_name]
            volumes.append({"name": claim_name,
                            "persistentVolumeClaim": {"claimName": f"{claim_name}-{name_of(sts)}-{ordinal}"}})
        if not volumes:
            del pod["spec"]["volumes"]
        return pod

    async def _create(self, sts: Object, ordinal: int, revision: Object) -> None:
        for claim in sts["spec"].get("volumeClaimTemplates") or ():
            body = copy.deepcopy(claim)
            body.update({"apiVersion": "v1", "kind": "PersistentVolumeClaim"})
            body["metadata"] = {**body.get("metadata", {}), "name": f"{claim['metadata']['name']}-{name_of(sts)}-{ordinal}",
                                "namespace": namespace_of(sts),
                                "labels": {**((claim.get("metadata") or {}).get("labels") or {}),
                                           **((sts["spec"].get("selector") or {}).get("matchLabels") or {})}}
            body.pop("status", None)
            try:
                await self.client.create("v1/persistentvolumeclaims", body, namespace=namespace_of(sts))
            except AlreadyExists:
                pass  # claims outlive pods: a re-created pod gets its old volume back
        try:
            created = await self.client.create("v1/pods", self._pod(sts, ordinal, revision), namespace=namespace_of(sts))
        except AlreadyExists:
            return  # the old pod of this ordinal is still going away
        self.record(sts, "Normal", "SuccessfulCreate",
                    f"create Pod {name_of(created)} in StatefulSet {name_of(sts)} successful")

    async def _delete(self, pod: Object) -> None:
        try:
            await self.client.delete("v1/pods", name_of(pod), namespace=namespace_of(pod),
                                     preconditions={"uid": uid_of(pod)})
        except NotFound:
            pass

    async def _status(self, sts: Object, pods: list[Object], update_revision: Object, current_name: str,
                      update_hash: str, revisions: list[Object]) -> None:
        active = [p for p in pods if is_active(p)]
        min_ready = int(sts["spec"].get("minReadySeconds") or 0)
        current_template = next((history.template_of(r) for r in revisions if name_of(r) == current_name), None)
        current_hash = history.template_hash(current_template) if current_template else update_hash
        updated = sum(1 for p in active if labels_of(p).get(CONTROLLER_REVISION_HASH) == update_hash)
        replicas = sts["spec"].get("replicas", 1)
        if updated == replicas and len(active) == replicas:
            current_name, current_hash = name_of(update_revision), update_hash  # the rollout is complete
        status = {
            "observedGeneration": generation_of(sts),
            "replicas": len(active),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": sum(1 for p in active if is_available(p, min_ready)),
            "currentReplicas": sum(1 for p in active if labels_of(p).get(CONTROLLER_REVISION_HASH) == current_hash),
            "updatedReplicas": updated,
            "currentRevision": current_name,
            "updateRevision": name_of(update_revision),
            "collisionCount": (sts.get("status") or {}).get("collisionCount", 0),
        }
        if status_equal(status, sts.get("status")):
            return
        try:
            await self.client.patch("apps/v1/statefulsets", name_of(sts), {"status": status},
                                    namespace=namespace_of(sts), patch_type="merge", subresource="status")
        except NotFound:
            pass
