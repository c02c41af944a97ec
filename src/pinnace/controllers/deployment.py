"""Deployment: roll pods from one ReplicaSet to the next (Kubernetes' DeploymentController).

Each reconcile takes one step and returns; the ReplicaSet and pod events bring the next one:
- The new ReplicaSet is the one whose pod template equals the Deployment's (ignoring the
  `pod-template-hash` label); it is named `<deployment>-<hash>` and created when missing. Re-using an old
  one (a rollback, `kubectl rollout undo`) moves it to the next revision.
- Paused Deployments and scaling events only resize (proportionally, during a rollout) and report.
- RollingUpdate grows the new ReplicaSet within maxSurge, then shrinks old ones within maxUnavailable.
  A template change mid-rollout simply makes another new ReplicaSet (rollover): everything else is old.
- Recreate scales every old ReplicaSet to zero, waits until their pods are gone, then scales up the new.
- Old ReplicaSets beyond `revisionHistoryLimit` are deleted once the rollout is complete.
- Status: counts, observedGeneration, Available, Progressing (with progressDeadlineSeconds) and
  ReplicaFailure copied from the new ReplicaSet, which is what `kubectl rollout status` reads.
The arithmetic lives in `pinnace.controllers.rollout`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pinnace.client import AlreadyExists, Conflict, NotFound
from pinnace.controllers import rollout
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    POD_TEMPLATE_HASH,
    Object,
    annotations_of,
    controller_ref,
    get_condition,
    is_being_deleted,
    is_controlled_by,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    now,
    owner_reference,
    remove_condition,
    selector_is_empty,
    selector_matches,
    status_equal,
    uid_of,
)
from pinnace.controllers.pods import is_terminal
from pinnace.controllers.rollout import replicas_of

log = logging.getLogger(__name__)


class DeploymentController(BaseController):
    """Rolls each Deployment's pods to its current template through ReplicaSets."""

    name = "deployment"

    def setup(self) -> None:
        self.deployments = self.indexed_informer("apps/v1/deployments")
        self.replicasets = self.indexed_informer("apps/v1/replicasets")
        self.pods = self.pod_informer()
        self.deployments.add_handler(on_add=self._deployment_event,
                                     on_update=lambda old, new: self._deployment_event(new),
                                     on_delete=self._deployment_event)
        self.replicasets.add_handler(on_add=self._rs_event, on_update=self._rs_updated, on_delete=self._rs_event)
        self.pods.add_handler(on_delete=self._pod_deleted)

    def _deployment_event(self, deployment: Object) -> None:
        self.enqueue(key_of(deployment))

    def _deployment_key(self, rs: Object) -> str | None:
        return self.owner_key(rs, "Deployment", "apps")

    def _rs_event(self, rs: Object) -> None:
        key = self._deployment_key(rs)
        if key is not None:
            self.enqueue(key)
        elif controller_ref(rs) is None:
            for deployment in self.deployments.by_index("namespace", namespace_of(rs) or ""):
                selector = deployment["spec"].get("selector")
                if not selector_is_empty(selector) and selector_matches(selector, labels_of(rs)):
                    self.enqueue(key_of(deployment))

    def _rs_updated(self, old: Object, new: Object) -> None:
        old_key, new_key = self._deployment_key(old), self._deployment_key(new)
        if old_key is not None and old_key != new_key:
            self.enqueue(old_key)
        self._rs_event(new)

    def _pod_deleted(self, pod: Object) -> None:
        # Only Recreate waits for pods to be gone; RollingUpdate follows its ReplicaSets' status.
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.get(f"{namespace_of(pod)}/{ref['name']}")
        key = self._deployment_key(rs) if rs else None
        if key is not None:
            self.enqueue(key)

    # --- reconcile ----------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return
        deployment = copy.deepcopy(cached)
        if selector_is_empty(deployment["spec"].get("selector")):
            self.record(deployment, "Warning", "SelectingAll", "This deployment is selecting all pods. "
                        "A non-empty selector is required.")
            return
        candidates = self.replicasets.by_index("namespace", namespace_of(deployment) or "")
        rs_list = await self.claim(deployment, candidates, "apps/v1/replicasets", deployment["spec"]["selector"])
        if is_being_deleted(deployment):
            await self.sync_status(deployment, rs_list)
            return
        await self.check_paused_condition(deployment)
        if deployment["spec"].get("paused"):
            await self.sync(deployment, rs_list)
            return
        active = [rs for rs in rs_list if replicas_of(rs) > 0]
        if rollout.is_scaling_event(deployment, active):
            await self.sync(deployment, rs_list)
            return
        if rollout.is_rolling_update(deployment):
            await self.rollout_rolling(deployment, rs_list)
        else:
            await self.rollout_recreate(deployment, rs_list)

    # --- ReplicaSets ----------------------------------------------------------------------------------

    async def new_and_old(self, deployment: Object, rs_list: list[Object], *, create: bool
                          ) -> tuple[Object | None, list[Object]]:
        """The new ReplicaSet (re-used or, when `create`, made now) and the old ones; syncs revisions."""
        new_rs = rollout.find_new_replica_set(deployment, rs_list)
        old_rs = [rs for rs in rs_list if rs is not new_rs]
        new_revision = rollout.max_revision(old_rs) + 1
        if new_rs is not None:
            new_rs = await self._sync_new_rs_annotations(deployment, new_rs, new_revision)
            await self._set_deployment_revision(deployment, rollout.revision_of(new_rs))
            if get_condition(deployment.get("status"), "Progressing") is None and deployment["spec"].get(
                    "progressDeadlineSeconds") is not None:
                status = copy.deepcopy(deployment.get("status") or {})
                rollout.set_deployment_condition(status, "Progressing", "True", rollout.FOUND_NEW_RS,
                                                 f'Found new replica set "{name_of(new_rs)}"')
                deployment["status"] = status
            return new_rs, old_rs
        if not create:
            return None, old_rs
        return await self._create_new_rs(deployment, old_rs, new_revision), old_rs

    async def _sync_new_rs_annotations(self, deployment: Object, rs: Object, new_revision: int) -> Object:
        wanted = dict(rollout.copied_annotations(deployment))
        if rollout.revision_of(rs) < new_revision:
            wanted.update(rollout.revision_annotations(rs, new_revision))
        current = annotations_of(rs)
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        min_ready = deployment["spec"].get("minReadySeconds") or 0
        spec_patch = {}
        if (rs["spec"].get("minReadySeconds") or 0) != min_ready:
            spec_patch["minReadySeconds"] = min_ready
        if not changes and not spec_patch:
            return rs
        patch: Object = {"metadata": {"annotations": changes}}
        if spec_patch:
            patch["spec"] = spec_patch
        return await self.client.patch("apps/v1/replicasets", name_of(rs), patch, namespace=namespace_of(rs),
                                       patch_type="merge")

    async def _set_deployment_revision(self, deployment: Object, revision: int) -> None:
        if annotations_of(deployment).get(rollout.REVISION) == str(revision) or revision <= 0:
            return
        updated = await self.client.patch("apps/v1/deployments", name_of(deployment),
                                          {"metadata": {"annotations": {rollout.REVISION: str(revision)}}},
                                          namespace=namespace_of(deployment), patch_type="merge")
        deployment["metadata"] = updated["metadata"]

    async def _create_new_rs(self, deployment: Object, old_rs: list[Object], revision: int) -> Object:
        spec = deployment["spec"]
        status = deployment.get("status") or {}
        collision_count = status.get("collisionCount")
        template_hash = rollout.pod_template_hash(spec["template"], collision_count)
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = template_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = template_hash
        if rollout.is_rolling_update(deployment):
            placeholder = {"metadata": {"name": ""}, "spec": {"replicas": 0}, "status": {}}
            replicas = rollout.new_rs_replicas_rolling(deployment, [*old_rs, placeholder], placeholder)
        else:
            replicas = replicas_of(deployment)
        name = f"{name_of(deployment)}-{template_hash}"
        annotations = {**rollout.copied_annotations(deployment), rollout.REVISION: str(revision),
                       **rollout.replicas_annotations(deployment)}
        body = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace_of(deployment),
                         "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
                         "ownerReferences": [owner_reference(deployment)]},
            "spec": {"replicas": replicas, "minReadySeconds": spec.get("minReadySeconds") or 0,
                     "selector": selector, "template": template},
        }
        try:
            created = await self.client.create("apps/v1/replicasets", body, namespace=namespace_of(deployment))
        except AlreadyExists:
            existing = await self.client.get("apps/v1/replicasets", name, namespace=namespace_of(deployment))
            if is_controlled_by(existing, deployment) and rollout.templates_equal_ignoring_hash(
                    existing["spec"]["template"], spec["template"]):
                return existing  # our own, made by an earlier pass whose event we have not seen yet
            # A hash collision: bump collisionCount so the next pass computes another name.
            new_status = copy.deepcopy(status)
            new_status["collisionCount"] = int(collision_count or 0) + 1
            await self.client.patch("apps/v1/deployments", name_of(deployment), {"status": new_status},
                                    namespace=namespace_of(deployment), patch_type="merge", subresource="status")
            raise
        if replicas > 0:
            self.record(deployment, "Normal", "ScalingReplicaSet", f"Scaled up replica set {name} to {replicas}")
        await self._set_deployment_revision(deployment, revision)
        status = copy.deepcopy(deployment.get("status") or {})
        if spec.get("progressDeadlineSeconds") is not None:
            rollout.set_deployment_condition(status, "Progressing", "True", rollout.NEW_RS_CREATED,
                                             f'Created new replica set "{name}"')
            deployment["status"] = status
        return created

    async def scale_rs(self, deployment: Object, rs: Object, size: int) -> Object:
        """Set a ReplicaSet's size and the annotations recording what it was sized for."""
        annotations = rollout.replicas_annotations(deployment)
        current = annotations_of(rs)
        size_changed = replicas_of(rs) != size
        if not size_changed and all(current.get(k) == v for k, v in annotations.items()):
            return rs
        patch: Object = {"metadata": {"annotations": annotations}, "spec": {"replicas": size}}
        updated = await self.client.patch("apps/v1/replicasets", name_of(rs), patch, namespace=namespace_of(rs),
                                          patch_type="merge")
        if size_changed:
            direction = "up" if size > replicas_of(rs) else "down"
            self.record(deployment, "Normal", "ScalingReplicaSet",
                        f"Scaled {direction} replica set {name_of(rs)} from {replicas_of(rs)} to {size}")
        return updated

    # --- strategies -----------------------------------------------------------------------------------

    async def sync(self, deployment: Object, rs_list: list[Object]) -> None:
        """Paused Deployments and scaling events: resize, clean up when paused, report."""
        new_rs, old_rs = await self.new_and_old(deployment, rs_list, create=False)
        await self.scale(deployment, new_rs, old_rs)
        if deployment["spec"].get("paused"):
            await self.cleanup(deployment, old_rs)
        await self.sync_status(deployment, await self._fresh(deployment))

    async def scale(self, deployment: Object, new_rs: Object | None, old_rs: list[Object]) -> None:
        target = rollout.active_or_latest(new_rs, old_rs)
        if target is not None:
            await self.scale_rs(deployment, target, replicas_of(deployment))
            return
        if rollout.is_saturated(deployment, new_rs):
            for rs in old_rs:
                if replicas_of(rs) > 0:
                    await self.scale_rs(deployment, rs, 0)
            return
        if rollout.is_rolling_update(deployment):
            sizes = rollout.proportional_sizes(deployment, new_rs, old_rs)
            for rs in [r for r in [new_rs, *old_rs] if r is not None]:
                if name_of(rs) in sizes:
                    await self.scale_rs(deployment, rs, sizes[name_of(rs)])

    async def rollout_rolling(self, deployment: Object, rs_list: list[Object]) -> None:
        new_rs, old_rs = await self.new_and_old(deployment, rs_list, create=True)
        assert new_rs is not None
        all_rs = [*old_rs, new_rs]
        desired = replicas_of(deployment)
        if replicas_of(new_rs) > desired:
            await self.scale_rs(deployment, new_rs, desired)
            await self.sync_rollout_status(deployment, await self._fresh(deployment))
            return
        if replicas_of(new_rs) < desired:
            size = rollout.new_rs_replicas_rolling(deployment, all_rs, new_rs)
            if size != replicas_of(new_rs):
                await self.scale_rs(deployment, new_rs, size)
                await self.sync_rollout_status(deployment, await self._fresh(deployment))
                return
        plan = rollout.plan_old_scale_down(deployment, [rs for rs in old_rs if replicas_of(rs) > 0], new_rs)
        if plan:
            for rs in old_rs:
                if name_of(rs) in plan:
                    await self.scale_rs(deployment, rs, plan[name_of(rs)])
            await self.sync_rollout_status(deployment, await self._fresh(deployment))
            return
        if rollout.is_complete(deployment, deployment.get("status") or {}):
            await self.cleanup(deployment, old_rs)
        await self.sync_rollout_status(deployment, all_rs)

    async def rollout_recreate(self, deployment: Object, rs_list: list[Object]) -> None:
        new_rs, old_rs = await self.new_and_old(deployment, rs_list, create=False)
        active_old = [rs for rs in old_rs if replicas_of(rs) > 0]
        if active_old:
            for rs in active_old:
                await self.scale_rs(deployment, rs, 0)
            await self.sync_rollout_status(deployment, await self._fresh(deployment))
            return
        if self._old_pods_running(old_rs):
            await self.sync_rollout_status(deployment, rs_list)
            return
        if new_rs is None:
            new_rs, old_rs = await self.new_and_old(deployment, rs_list, create=True)
            assert new_rs is not None
        if replicas_of(new_rs) != replicas_of(deployment):
            await self.scale_rs(deployment, new_rs, replicas_of(deployment))
        if rollout.is_complete(deployment, deployment.get("status") or {}):
            await self.cleanup(deployment, old_rs)
        await self.sync_rollout_status(deployment, await self._fresh(deployment))

    def _old_pods_running(self, old_rs: list[Object]) -> bool:
        if any(rollout.status_count(rs, "replicas") > 0 for rs in old_rs):
            return True
        return any(not is_terminal(pod) for rs in old_rs for pod in self.pods.by_index("owner", uid_of(rs)))

    async def cleanup(self, deployment: Object, old_rs: list[Object]) -> None:
        """Delete the oldest unused ReplicaSets beyond revisionHistoryLimit."""
        limit = deployment["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        unused = [rs for rs in old_rs if replicas_of(rs) == 0 and rollout.status_count(rs, "replicas") == 0
                  and not is_being_deleted(rs)]
        surplus = len(unused) - limit
        if surplus <= 0:
            return
        for rs in sorted(unused, key=lambda r: (rollout.revision_of(r), rollout.creation_key(r)))[:surplus]:
            try:
                await self.client.delete("apps/v1/replicasets", name_of(rs), namespace=namespace_of(rs),
                                         preconditions={"uid": uid_of(rs)})
            except (NotFound, Conflict):
                pass

    async def _fresh(self, deployment: Object) -> list[Object]:
        """The Deployment's ReplicaSets as the cache has them now (our writes show up eventually)."""
        return list(self.replicasets.by_index("owner", uid_of(deployment)))

    # --- status ---------------------------------------------------------------------------------------

    async def check_paused_condition(self, deployment: Object) -> None:
        if deployment["spec"].get("progressDeadlineSeconds") is None:
            return
        status = copy.deepcopy(deployment.get("status") or {})
        condition = get_condition(status, "Progressing")
        paused = bool(deployment["spec"].get("paused"))
        if paused and (condition is None or condition.get("reason") != rollout.PAUSED):
            rollout.set_deployment_condition(status, "Progressing", "Unknown", rollout.PAUSED, "Deployment is paused")
        elif not paused and condition is not None and condition.get("reason") == rollout.PAUSED:
            rollout.set_deployment_condition(status, "Progressing", "Unknown", rollout.RESUMED,
                                             "Deployment is resumed")
        else:
            return
        await self._write_status(deployment, status)
        deployment["status"] = status

    async def sync_status(self, deployment: Object, rs_list: list[Object]) -> None:
        """Counts and Available only (paused, scaling, being deleted)."""
        new_rs = rollout.find_new_replica_set(deployment, rs_list)
        status = rollout.calculate_status(deployment, new_rs, rs_list)
        await self._write_status(deployment, status)

    async def sync_rollout_status(self, deployment: Object, rs_list: list[Object]) -> None:
        new_rs = rollout.find_new_replica_set(deployment, rs_list)
        status = rollout.calculate_status(deployment, new_rs, rs_list)
        at = now()
        condition = get_condition(status, "Progressing")
        deadline = deployment["spec"].get("progressDeadlineSeconds")
        complete_already = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                            and condition is not None and condition.get("reason") == rollout.NEW_RS_AVAILABLE)
        rs_name = name_of(new_rs) if new_rs else ""
        if deadline is not None and not complete_already:
            if rollout.is_complete(deployment, status):
                rollout.set_deployment_condition(status, "Progressing", "True", rollout.NEW_RS_AVAILABLE,
                                                 f'ReplicaSet "{rs_name}" has successfully progressed.', at)
            elif rollout.is_progressing(deployment, status):
                self._refresh_progressing(status, f'ReplicaSet "{rs_name}" is progressing.', at)
            elif rollout.has_timed_out(deployment, status, at):
                rollout.set_deployment_condition(status, "Progressing", "False", rollout.TIMED_OUT,
                                                 f'ReplicaSet "{rs_name}" has timed out progressing.', at)
                self.record(deployment, "Warning", rollout.TIMED_OUT, f'ReplicaSet "{rs_name}" has timed out progressing.')
        failure = get_condition((new_rs or {}).get("status"), "ReplicaFailure")
        if failure is not None:
            rollout.set_deployment_condition(status, "ReplicaFailure", failure.get("status", "True"),
                                             failure.get("reason", "FailedCreate"), failure.get("message", ""), at)
        else:
            remove_condition(status, "ReplicaFailure")
        await self._write_status(deployment, status)
        wait = rollout.seconds_until_deadline(deployment, status, at)
        if wait is not None:
            self.enqueue_after(key_of(deployment), wait)

    @staticmethod
    def _refresh_progressing(status: Object, message: str, at: Any) -> None:
        """Progress was made: a fresh lastUpdateTime restarts the deadline (Kubernetes does the same)."""
        current = get_condition(status, "Progressing")
        transition = current.get("lastTransitionTime") if current and current.get("status") == "True" else None
        remove_condition(status, "Progressing")
        rollout.set_deployment_condition(status, "Progressing", "True", rollout.RS_UPDATED, message, at)
        if transition:
            get_condition(status, "Progressing")["lastTransitionTime"] = transition  # type: ignore[index]

    async def _write_status(self, deployment: Object, status: Object) -> None:
        if status_equal(status, deployment.get("status")):
            return
        try:
            await self.client.patch("apps/v1/deployments", name_of(deployment),
                                    {"status": {**status, "conditions": status.get("conditions") or None}},
                                    namespace=namespace_of(deployment), patch_type="merge", subresource="status")
        except NotFound:
            pass
