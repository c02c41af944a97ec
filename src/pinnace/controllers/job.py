"""Job: run pods to completion (Kubernetes' Job controller, counting from the pods that exist).

- Up to `parallelism` pods run at once, never more than the completions still missing. Without
  `completions` (a work queue), the Job completes when a pod has succeeded and none is running.
- `completionMode: Indexed`: each pod gets an index 0..completions-1 (annotation and label
  `batch.kubernetes.io/job-completion-index`, env JOB_COMPLETION_INDEX, hostname `<job>-<index>`); the
  Job completes when every index has succeeded; `status.completedIndexes` lists them ("0-2,4").
- A failed pod is replaced after a back-off (10 s doubling, capped at 6 min; configurable); more failures
  than `backoffLimit` (6) fail the Job with BackoffLimitExceeded; running past `activeDeadlineSeconds`
  fails it with DeadlineExceeded. A failed Job's running pods are deleted.
- `ttlSecondsAfterFinished`: a finished Job is deleted (with its pods, in the foreground) that long after.
- `suspend: true` deletes running pods and creates none.
Pods are counted from the cluster; finished pods stay until the Job goes, so the counts survive restarts.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from pinnace.client import ApiError, NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.expectations import Expectations
from pinnace.controllers.objects import (
    Object,
    annotations_of,
    controller_ref,
    format_time,
    get_condition,
    is_being_deleted,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    now,
    parse_time,
    selector_is_empty,
    selector_matches,
    set_condition,
    status_equal,
    uid_of,
)
from pinnace.controllers.pods import is_active, is_ready, phase_of, pod_from_template, rank_for_deletion

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def job_finished(job: Mapping[str, Any]) -> str | None:
    for type_ in ("Complete", "Failed"):
        condition = get_condition(job.get("status"), type_)
        if condition is not None and condition.get("status") == "True":
            return type_
    return None


def pod_index(pod: Mapping[str, Any]) -> int | None:
    value = annotations_of(pod).get(COMPLETION_INDEX) or labels_of(pod).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def format_indexes(indexes: set[int]) -> str:
    """Kubernetes' compressed interval form: {0,1,2,4} -> "0-2,4"."""
    parts, ordered, i = [], sorted(indexes), 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def finished_at(pod: Mapping[str, Any]) -> dt.datetime | None:
    times = [parse_time(((s.get("state") or {}).get("terminated") or {}).get("finishedAt"))
             for s in (pod.get("status") or {}).get("containerStatuses") or ()]
    times = [t for t in times if t]
    if times:
        return max(times)
    return parse_time((pod.get("metadata") or {}).get("creationTimestamp"))


class JobController(BaseController):
    name = "job"

    def setup(self) -> None:
        self.expectations = Expectations()
        self.jobs = self.indexed_informer("batch/v1/jobs")
        self.pods = self.pod_informer()
        self.jobs.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                              on_delete=self._job_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    def _job_deleted(self, job: Object) -> None:
        self.expectations.forget(key_of(job))

    def _job_key(self, pod: Mapping[str, Any]) -> str | None:
        return self.owner_key(pod, "Job", "batch")

    def _pod_added(self, pod: Object) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue(key)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = self._job_key(new)
        if key is None:
            return
        if is_being_deleted(new) and not is_being_deleted(old):
            self.expectations.deletion_observed(key, uid_of(new))
        if phase_of(old) != phase_of(new) or is_ready(old) != is_ready(new) or is_being_deleted(new):
            self.enqueue(key)

    def _pod_deleted(self, pod: Object) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, uid_of(pod))
            self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        cached = self.jobs.get(key)
        if cached is None:
            self.expectations.forget(key)
            return
        job = copy.deepcopy(cached)
        if job_finished(job):
            await self._after_finish(job)
            return
        if is_being_deleted(job):
            return
        spec = job["spec"]
        candidates = [p for p in self.pods.by_index("namespace", namespace_of(job) or "")
                      if (ref := controller_ref(p)) is None or ref.get("uid") == uid_of(job)]
        selector = spec.get("selector")
        if selector_is_empty(selector):
            pods = [p for p in candidates if (ref := controller_ref(p)) and ref.get("uid") == uid_of(job)]
        else:
            pods = await self.claim(job, [p for p in candidates if selector_matches(selector, labels_of(p))
                                          or controller_ref(p) is not None], "v1/pods", selector)
        active = [p for p in pods if is_active(p)]
        succeeded = [p for p in pods if phase_of(p) == "Succeeded"]
        failed = [p for p in pods if phase_of(p) == "Failed"]
        status = copy.deepcopy(job.get("status") or {})
        at = now()
        status.setdefault("startTime", format_time(at))
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        done_indexes = {i for p in succeeded if (i := pod_index(p)) is not None
                        and (completions is None or i < completions)}
        backoff_limit = spec.get("backoffLimit", 6)
        started = parse_time(status.get("startTime")) or at
        deadline = spec.get("activeDeadlineSeconds")
        failure: tuple[str, str] | None = None
        if len(failed) > backoff_limit:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and started + dt.timedelta(seconds=int(deadline)) <= at:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if indexed:
            complete = completions is not None and len(done_indexes) >= completions
        elif completions is not None:
            complete = len(succeeded) >= completions
        else:
            complete = bool(succeeded) and not active
        if failure is not None:
            await self._delete_pods(job, active)
            active = []
            self._finish(status, "Failed", failure[0], failure[1], at)
            self.record(job, "Warning", failure[0], failure[1])
        elif complete:
            await self._delete_pods(job, active)
            active = []
            self._finish(status, "Complete", None, None, at)
            status["completionTime"] = format_time(at)
            self.record(job, "Normal", "Completed", "Job completed")
        elif self.expectations.satisfied(key):
            await self._manage(job, active, succeeded, failed, done_indexes, at)
        if deadline is not None and failure is None and not complete:
            remaining = (started + dt.timedelta(seconds=int(deadline)) - at).total_seconds()
            self.enqueue_after(key, max(0.0, remaining) + 0.05)
        status.update({"active": len(active), "succeeded": len(succeeded), "failed": len(failed),
                       "ready": sum(1 for p in active if is_ready(p))})
        if indexed:
            status["completedIndexes"] = format_indexes(done_indexes)
        if not status_equal(status, job.get("status")):
            try:
                await self.client.patch("batch/v1/jobs", name_of(job), {"status": status},
                                        namespace=namespace_of(job), patch_type="merge", subresource="status")
            except NotFound:
                return
        if job_finished({"status": status}):
            await self._after_finish({**job, "status": status})

    @staticmethod
    def _finish(status: Object, type_: str, reason: str | None, message: str | None, at: dt.datetime) -> None:
        condition: Object = {"type": type_, "status": "True", "lastProbeTime": format_time(at),
                             "lastTransitionTime": format_time(at)}
        if reason:
            condition.update({"reason": reason, "message": message})
        set_condition(status, condition)

    async def _manage(self, job: Object, active: list[Object], succeeded: list[Object], failed: list[Object],
                      done_indexes: set[int], at: dt.datetime) -> None:
        key = key_of(job)
        spec = job["spec"]
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        if spec.get("suspend"):
            wanted = 0
        elif completions is None:
            wanted = 0 if succeeded else parallelism
        elif spec.get("completionMode") == "Indexed":
            wanted = min(parallelism, completions - len(done_indexes))
        else:
            wanted = min(parallelism, completions - len(succeeded))
        wanted = max(0, wanted)
        if len(active) > wanted:
            await self._delete_pods(job, rank_for_deletion(active)[: len(active) - wanted])
            return
        missing = wanted - len(active)
        if missing <= 0:
            return
        if failed:
            delay = min(self.config.job_backoff_max, self.config.job_backoff_base * 2 ** (len(failed) - 1))
            last = max((t for p in failed if (t := finished_at(p))), default=None)
            if last is not None:
                wait = (last + dt.timedelta(seconds=delay) - at).total_seconds()
                if wait > 0:
                    self.enqueue_after(key, wait)
                    return
        pods: list[Object] = []
        if spec.get("completionMode") == "Indexed":
            running = {pod_index(p) for p in active}
            free = [i for i in range(completions or 0) if i not in done_indexes and i not in running]
            pods = [self._indexed_pod(job, i) for i in free[:missing]]
        else:
            pods = [pod_from_template(spec["template"], job, namespace=namespace_of(job) or "default")
                    for _ in range(missing)]
        self.expectations.expect_creations(key, len(pods))
        results = await asyncio.gather(*(self.client.create("v1/pods", p, namespace=namespace_of(job)) for p in pods),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.expectations.creation_observed(key, len(errors))
            self.record(job, "Warning", "FailedCreate", f"Error creating: {errors[0]}")
            if not all(isinstance(e, ApiError) for e in errors):
                raise errors[0]
            raise errors[0]
        for result in results:
            self.record(job, "Normal", "SuccessfulCreate", f"Created pod: {result['metadata']['name']}")

    def _indexed_pod(self, job: Object, index: int) -> Object:
        pod = pod_from_template(job["spec"]["template"], job, namespace=namespace_of(job) or "default")
        pod["metadata"]["generateName"] = f"{name_of(job)}-{index}-"
        pod["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
        pod["metadata"]["labels"][COMPLETION_INDEX] = str(index)
        pod["spec"].setdefault("hostname", f"{name_of(job)}-{index}")
        for container in pod["spec"].get("containers") or ():
            env = container.setdefault("env", [])
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                env.append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        return pod

    async def _delete_pods(self, job: Object, pods: list[Object]) -> None:
        if not pods:
            return
        self.expectations.expect_deletions(key_of(job), [uid_of(p) for p in pods])
        for pod in pods:
            try:
                await self.client.delete("v1/pods", name_of(pod), namespace=namespace_of(pod))
            except NotFound:
                self.expectations.deletion_observed(key_of(job), uid_of(pod))

    async def _after_finish(self, job: Object) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None or is_being_deleted(job):
            return
        finished = job_finished(job)
        condition = get_condition(job.get("status"), finished or "Complete") or {}
        since = parse_time(job["status"].get("completionTime")) or parse_time(condition.get("lastTransitionTime"))
        if since is None:
            return
        wait = (since + dt.timedelta(seconds=int(ttl)) - now()).total_seconds()
        if wait > 0:
            self.enqueue_after(key_of(job), wait + 0.05)
            return
        try:
            await self.client.delete("batch/v1/jobs", name_of(job), namespace=namespace_of(job),
                                     propagation_policy="Foreground", preconditions={"uid": uid_of(job)})
        except NotFound:
            pass
