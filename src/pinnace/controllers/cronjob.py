"""CronJob: create a Job for each scheduled time (Kubernetes' CronJob controller v2).

At each pass: drop finished Jobs from `status.active`, record `lastSuccessfulTime`, delete finished Jobs
beyond `successfulJobsHistoryLimit` (3) / `failedJobsHistoryLimit` (1), then look for the most recent
scheduled time since `lastScheduleTime` (or creation). It is skipped when older than
`startingDeadlineSeconds`; with `concurrencyPolicy: Forbid` it waits while a Job runs, with `Replace` the
running Jobs are deleted first. The Job is named `<cronjob>-<minutes since epoch>`, so a repeated pass
cannot start the same run twice. `suspend` stops new runs. The next pass is queued for the next time.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from pinnace.client import AlreadyExists, NotFound
from pinnace.controllers import cron
from pinnace.controllers.base import BaseController
from pinnace.controllers.job import job_finished
from pinnace.controllers.objects import (
    Object,
    format_time,
    is_being_deleted,
    name_of,
    namespace_of,
    now,
    owner_reference,
    parse_time,
    status_equal,
    uid_of,
)

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def job_reference(job: Object) -> Object:
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name_of(job), "namespace": namespace_of(job),
            "uid": uid_of(job), "resourceVersion": job["metadata"].get("resourceVersion")}


class CronJobController(BaseController):
    name = "cronjob"

    def setup(self) -> None:
        self.cronjobs = self.indexed_informer("batch/v1/cronjobs")
        self.jobs = self.indexed_informer("batch/v1/jobs")
        self.cronjobs.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.jobs.add_handler(on_add=self._job_event, on_update=lambda old, new: self._job_event(new),
                              on_delete=self._job_event)

    def _job_event(self, job: Object) -> None:
        key = self.owner_key(job, "CronJob", "batch")
        if key is not None:
            self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        cached = self.cronjobs.get(key)
        if cached is None or is_being_deleted(cached):
            return
        cronjob = copy.deepcopy(cached)
        spec = cronjob["spec"]
        status: Object = copy.deepcopy(cronjob.get("status") or {})
        jobs = list(self.jobs.by_index("owner", uid_of(cronjob)))
        running = [j for j in jobs if not job_finished(j) and not is_being_deleted(j)]
        status["active"] = [job_reference(j) for j in sorted(running, key=name_of)] or None
        succeeded = [j for j in jobs if job_finished(j) == "Complete"]
        if succeeded:
            latest = max((j.get("status") or {}).get("completionTime") or "" for j in succeeded)
            if latest and latest > (status.get("lastSuccessfulTime") or ""):
                status["lastSuccessfulTime"] = latest
        await self._clean_history(spec, jobs)
        at = now()
        try:
            schedule = cron.parse(spec["schedule"], spec.get("timeZone"))
        except cron.ScheduleError as error:
            self.record(cronjob, "Warning", "UnparseableSchedule", f"unparseable schedule: {error}")
            await self._write(cronjob, status)
            return
        if not spec.get("suspend"):
            scheduled = self._most_recent(cronjob, status, schedule, at)
            if scheduled is not None:
                deadline = spec.get("startingDeadlineSeconds")
                if deadline is not None and scheduled + dt.timedelta(seconds=int(deadline)) < at:
                    self.record(cronjob, "Warning", "MissSchedule", f"Missed scheduled time to start a job: "
                                f"{format_time(scheduled)}")
                elif running and spec.get("concurrencyPolicy") == "Forbid":
                    self.record(cronjob, "Normal", "JobAlreadyActive", "Not starting job because prior execution is "
                                "running and concurrency policy is Forbid")
                    scheduled = None  # try again when the running Job finishes or at the next time
                else:
                    if running and spec.get("concurrencyPolicy") == "Replace":
                        for job in running:
                            await self._delete_job(job)
                            self.record(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {name_of(job)}")
                        status["active"] = None
                    job = await self._create_job(cronjob, scheduled)
                    if job is not None:
                        status["active"] = [*(status.get("active") or []), job_reference(job)]
                if scheduled is not None:
                    status["lastScheduleTime"] = format_time(scheduled)
        await self._write(cronjob, status)
        self.enqueue_after(key, (schedule.next_after(at) - at).total_seconds() + 0.1)

    def _most_recent(self, cronjob: Object, status: Object, schedule: cron.Schedule, at: dt.datetime) -> dt.datetime | None:
        since = parse_time(status.get("lastScheduleTime")) or parse_time(cronjob["metadata"].get("creationTimestamp")) or at
        latest = None
        moment = schedule.next_after(since)
        for _ in range(10_000):  # bounded: Kubernetes also gives up counting after 100 missed runs
            if moment > at:
                break
            latest = moment
            moment = schedule.next_after(moment)
        return latest

    async def _create_job(self, cronjob: Object, scheduled: dt.datetime) -> Object | None:
        template = copy.deepcopy(cronjob["spec"].get("jobTemplate") or {})
        metadata = template.get("metadata") or {}
        name = f"{name_of(cronjob)}-{int(scheduled.timestamp() // 60)}"
        body: Object = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace_of(cronjob), "labels": metadata.get("labels") or {},
                         "annotations": {**(metadata.get("annotations") or {}),
                                         SCHEDULED_TIMESTAMP: format_time(scheduled)},
                         "ownerReferences": [owner_reference(cronjob)]},
            "spec": template.get("spec") or {},
        }
        try:
            job = await self.client.create("batch/v1/jobs", body, namespace=namespace_of(cronjob))
        except AlreadyExists:
            return None  # this run already has its Job
        self.record(cronjob, "Normal", "SuccessfulCreate", f"Created job {name}")
        return job

    async def _clean_history(self, spec: dict[str, Any], jobs: list[Object]) -> None:
        for state, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                             ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            finished = sorted((j for j in jobs if job_finished(j) == state and not is_being_deleted(j)),
                              key=lambda j: (j.get("status") or {}).get("startTime") or j["metadata"].get(
                                  "creationTimestamp") or "")
            for job in finished[: max(0, len(finished) - int(limit))]:
                await self._delete_job(job)

    async def _delete_job(self, job: Object) -> None:
        try:
            await self.client.delete("batch/v1/jobs", name_of(job), namespace=namespace_of(job),
                                     propagation_policy="Background")
        except NotFound:
            pass

    async def _write(self, cronjob: Object, status: Object) -> None:
        if status_equal(status, cronjob.get("status")):
            return
        try:
            await self.client.patch("batch/v1/cronjobs", name_of(cronjob), {"status": status},
                                    namespace=namespace_of(cronjob), patch_type="merge", subresource="status")
        except NotFound:
            pass
