"""The scheduler: watches pending pods and binds each to the best node its profile finds.

    scheduler = Scheduler(client)                 # or Scheduler(client, "config.yaml" / dict / SchedulerConfig)
    await scheduler.start() ... await scheduler.stop()
    # or: await scheduler.run()                   # until cancelled

Wiring, as Kubernetes' kube-scheduler:
- Informers on pods, nodes, namespaces, PriorityClasses and PodDisruptionBudgets feed the cache
  (placed pods, nodes) and the scheduling queue (pending pods of one of our profiles).
- One scheduling loop pops a pod, runs its profile synchronously (the cache cannot change meanwhile),
  assumes the pod onto the chosen node and hands binding to a background task, so the next pod is
  scheduled at once. A failed binding forgets the assumption and sends the pod to back-off.
- A pod that fits nowhere gets PostFilter (preemption), then `PodScheduled=False` with reason
  `Unschedulable` and Kubernetes' message, and a FailedScheduling event; it waits in the queue for a
  cluster event that could help.
- With leader election (default), only the holder of the `kube-system/kube-scheduler` Lease
  schedules; the others wait to take over.

Every scheduled pod costs the API server a binding and an event, so give the scheduler a client
whose rate limit does not become the scheduler's (`Client(..., qps=None)` or a high `qps`; the
`pinnace scheduler` command uses 1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pinnace.client import ApiError, Conflict, EventRecorder, InformerFactory, LeaderElector, NotFound
from pinnace.scheduler.cache import Cache
from pinnace.scheduler.framework import Code, CycleState, PodInfo, Status, error
from pinnace.scheduler.plugins.default_preemption import NAME as PREEMPTION
from pinnace.scheduler.plugins.default_preemption import Candidate
from pinnace.scheduler.profile import FitError, Framework, SchedulerConfig
from pinnace.scheduler.queue import ANY_EVENT, QueuedPodInfo, SchedulingQueue

log = logging.getLogger(__name__)

COMPONENT = "default-scheduler"
OPTIONAL_SYNC_TIMEOUT = 5.0
PENDING_SWEEP_INTERVAL = 60.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(pod: Mapping) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _key(pod: Mapping) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _assigned(pod: Mapping) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _finished(pod: Mapping) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _node_relevant(node: Mapping) -> tuple:
    """The parts of a Node that scheduling reads; heartbeats change none of them."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    return (meta.get("labels"), node.get("spec"), status.get("allocatable"), status.get("capacity"),
            status.get("images"))


class _Handle:
    """What plugins may see of the scheduler (framework.Handle)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.snapshot = scheduler.cache
        self.client = scheduler.client

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        informer = self._scheduler._namespaces
        obj = informer.get(namespace) if informer is not None else None
        if obj is None:
            return {"kubernetes.io/metadata.name": namespace}
        return (obj.get("metadata") or {}).get("labels") or {}

    def pod_disruption_budgets(self) -> list[Mapping]:
        informer = self._scheduler._pdbs
        return informer.list() if informer is not None else []

    def nominated_pods(self, node_name: str) -> list[PodInfo]:
        return self._scheduler.queue.nominated_pods(node_name)

    def has_nominated_pods(self) -> bool:
        return self._scheduler.queue.has_nominated_pods()

    def get_waiting_pod(self, uid: str) -> WaitingPod | None:
        return self._scheduler.waiting_pods.get(uid)


class WaitingPod:
    """A pod held at Permit until every waiting plugin allows it, one rejects it, or time runs out."""

    def __init__(self, pod: PodInfo, plugins: tuple[str, ...]) -> None:
        self.pod = pod
        self.pending = set(plugins)
        self.future: asyncio.Future[Status | None] = asyncio.get_running_loop().create_future()

    def allow(self, plugin: str) -> None:
        self.pending.discard(plugin)
        if not self.pending and not self.future.done():
            self.future.set_result(None)

    def reject(self, plugin: str, message: str) -> None:
        if not self.future.done():
            self.future.set_result(Status(Code.UNSCHEDULABLE, (message,), plugin))


class Scheduler:
    def __init__(self, client: Any, config: SchedulerConfig | Mapping[str, Any] | str | None = None, *,
                 leader_elect: bool | None = None, identity: str | None = None) -> None:
        if config is None:
            config = SchedulerConfig()
        elif isinstance(config, str):
            config = SchedulerConfig.load(config)
        elif isinstance(config, Mapping):
            config = SchedulerConfig.from_dict(config)
        self.config: SchedulerConfig = config
        self.client = client
        self.leader_elect = config.leader_elect if leader_elect is None else leader_elect
        self.identity = identity
        self.cache = Cache()
        self.queue = SchedulingQueue(config.pod_initial_backoff_seconds, config.pod_max_backoff_seconds,
                                     events_of=self._events_that_may_help)
        self.handle = _Handle(self)
        self.profiles: dict[str, Framework] = {
            p.scheduler_name: Framework(p, self.handle, config.percentage_of_nodes_to_score) for p in config.profiles
        }
        self.recorder = EventRecorder(client, component=COMPONENT)
        self.factory: InformerFactory | None = None
        self._pods = self._nodes = self._namespaces = self._pdbs = self._priority_classes = None
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._binding_slots = asyncio.Semaphore(max(1, config.parallel_bindings))
        self.elector: LeaderElector | None = None
        self.ready = asyncio.Event()  # set once informers synced and the loop runs
        self.waiting_pods: dict[str, WaitingPod] = {}
        # Counters for tests and benchmarks.
        self.scheduled = 0
        self.failed_attempts = 0
        self.bind_errors = 0
        self.cycle_seconds = 0.0

    # ---- lifecycle

    async def start(self) -> None:
        """Start in the background (campaigning for leadership first, when enabled)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.recorder.close()

    async def run(self) -> None:
        """Schedule until cancelled; with leader election only while holding the Lease."""
        if self.leader_elect:
            self.elector = LeaderElector(self.client, self.config.lease_name, namespace=self.config.lease_namespace,
                                         identity=self.identity)
            await self.elector.run(self._lead)
        else:
            await self._lead()

    async def _lead(self) -> None:
        self._reset()
        factory = self.factory = InformerFactory(self.client)
        self._pods = factory.informer("v1/pods")
        self._nodes = factory.informer("v1/nodes")
        self._namespaces = factory.informer("v1/namespaces")
        self._pdbs = factory.informer("policy/v1/poddisruptionbudgets")
        self._priority_classes = factory.informer("scheduling.k8s.io/v1/priorityclasses")
        self._nodes.add_handler(self._on_node_add, self._on_node_update, self._on_node_delete)
        self._pods.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self._namespaces.add_handler(on_update=self._on_namespace_update)
        flusher = None
        try:
            await factory.start()
            # Priority classes first, so pods listed before them still get the right priority; the
            # optional kinds must not hold the scheduler back if the server lacks them.
            for optional in (self._priority_classes, self._namespaces, self._pdbs):
                with contextlib.suppress(TimeoutError):
                    await optional.wait_synced(timeout=OPTIONAL_SYNC_TIMEOUT)
            await self._nodes.wait_synced()
            await self._pods.wait_synced()
            flusher = asyncio.get_running_loop().create_task(self._periodic(), name="scheduler queue")
            self.ready.set()
            await self._scheduling_loop()
        finally:
            self.ready.clear()
            self.queue.close()
            if flusher is not None:
                flusher.cancel()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(flusher or asyncio.sleep(0), *self._background, return_exceptions=True)
            self._background.clear()
            await factory.stop()

    async def _periodic(self) -> None:
        """The queue's timed moves, and now and then a sweep for pending pods nothing holds."""
        flushers = asyncio.ensure_future(self.queue.run_flushers())
        try:
            while True:
                await asyncio.sleep(PENDING_SWEEP_INTERVAL)
                self.requeue_orphans()
        finally:
            flushers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushers

    def requeue_orphans(self) -> int:
        """Queue pending pods of our profiles that are neither queued, in flight nor assumed.

        Every path is meant to keep a pending pod somewhere; this sweep is the safety net should an
        event ever be missed, so a pod cannot stay Pending forever without an explanation.
        """
        if self._pods is None:
            return 0
        found = 0
        for pod in self._pods.list():
            if _assigned(pod) or _finished(pod) or not self._responsible(pod):
                continue
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            uid = _uid(pod)
            if uid in self.queue or self.queue.in_flight(uid) or self.cache.get_pod(uid) is not None:
                continue
            log.warning("pending pod %s was not queued; queueing it", _key(pod))
            self.queue.add(self._pod_info(pod))
            found += 1
        return found

    def _reset(self) -> None:
        # Leadership may be lost and regained: start from a clean cache and queue each time.
        self.cache = Cache()
        self.handle.snapshot = self.cache
        self.queue = SchedulingQueue(self.config.pod_initial_backoff_seconds, self.config.pod_max_backoff_seconds,
                                     events_of=self._events_that_may_help)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ---- informer handlers

    def _priority(self, pod: Mapping) -> int:
        spec = pod.get("spec") or {}
        if spec.get("priority") is not None:
            return int(spec["priority"])
        informer = self._priority_classes
        name = spec.get("priorityClassName")
        if informer is not None:
            if name:
                pc = informer.get(name)
                if pc is not None:
                    return int(pc.get("value") or 0)
            else:
                for pc in informer.list():
                    if pc.get("globalDefault"):
                        return int(pc.get("value") or 0)
        return 0

    def _pod_info(self, pod: Mapping) -> PodInfo:
        return PodInfo(pod, self._priority(pod))

    def _responsible(self, pod: Mapping) -> bool:
        return ((pod.get("spec") or {}).get("schedulerName") or COMPONENT) in self.profiles

    def _on_pod_add(self, pod: Mapping) -> None:
        if _assigned(pod):
            if not _finished(pod):
                self.cache.add_pod(self._pod_info(pod))
                self.queue.move_all_to_active_or_backoff("Pod/Add")
        elif self._responsible(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(self._pod_info(pod))

    def _on_pod_update(self, old: Mapping, new: Mapping) -> None:
        uid = _uid(new)
        if _assigned(new):
            if _finished(new):
                # Finished pods free their resources, as Kubernetes' cache drops them.
                if self.cache.remove_pod(uid) is not None:
                    self.queue.move_all_to_active_or_backoff("Pod/Delete")
                return
            was_assigned = _assigned(old)
            if not was_assigned:
                self.queue.delete(uid)  # bound (by us, or by someone else)
            else:
                self.queue.delete_nominated(uid)
            if was_assigned or not self.cache.confirm_assumed(uid, new["spec"]["nodeName"], new):
                self.cache.add_pod(self._pod_info(new))
            old_labels = (old.get("metadata") or {}).get("labels")
            new_labels = (new.get("metadata") or {}).get("labels")
            if not was_assigned:
                self.queue.move_all_to_active_or_backoff("Pod/Add")
            elif old_labels != new_labels or (old.get("metadata") or {}).get("deletionTimestamp") != (
                    new.get("metadata") or {}).get("deletionTimestamp"):
                self.queue.move_all_to_active_or_backoff("Pod/Update")
        elif self._responsible(new):
            if (new.get("metadata") or {}).get("deletionTimestamp"):
                self.queue.delete(uid)
            elif (old.get("spec") != new.get("spec") or (old.get("metadata") or {}).get("labels")
                  != (new.get("metadata") or {}).get("labels")) or uid not in self.queue:
                # Our own status patches also come back here; only real changes re-queue.
                self.queue.update(self._pod_info(new))

    def _on_pod_delete(self, pod: Mapping) -> None:
        uid = _uid(pod)
        self.queue.delete(uid)
        if self.cache.remove_pod(uid) is not None:
            self.queue.move_all_to_active_or_backoff("Pod/Delete")

    def _on_node_add(self, node: Mapping) -> None:
        self.cache.add_node(node)
        self.queue.move_all_to_active_or_backoff("Node/Add")

    def _on_node_update(self, old: Mapping, new: Mapping) -> None:
        if _node_relevant(old) == _node_relevant(new):
            return
        self.cache.update_node(new)
        self.queue.move_all_to_active_or_backoff("Node/Update")

    def _on_node_delete(self, node: Mapping) -> None:
        self.cache.remove_node(node["metadata"]["name"])

    def _on_namespace_update(self, old: Mapping, new: Mapping) -> None:
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            self.queue.move_all_to_active_or_backoff("Namespace/Update")

    def _events_that_may_help(self, qpi: QueuedPodInfo) -> frozenset[str]:
        """The events registered by the plugins that rejected the pod (any event if unknown)."""
        framework = self.profiles.get(qpi.pod_info.scheduler_name)
        if framework is None or not qpi.unschedulable_plugins:
            return ANY_EVENT
        return framework.events_for(qpi.unschedulable_plugins)

    # ---- the scheduling loop

    async def _scheduling_loop(self) -> None:
        while True:
            qpi = await self.queue.pop()
            # Back-pressure: do not run further ahead of the API server than the binding slots allow.
            await self._binding_slots.acquire()
            released = True
            try:
                released = not self.schedule_one(qpi)
            except Exception:
                log.exception("scheduling %s failed", qpi.pod_info.key)
                self.cache.forget_pod(qpi.pod_info)  # in case it failed after assuming
                self.queue.add_unschedulable(qpi, self.queue.scheduling_cycle, error=True)
            finally:
                if released:
                    self._binding_slots.release()
            # Let informers, bindings and status updates run between pods.
            await asyncio.sleep(0)

    def schedule_one(self, qpi: QueuedPodInfo) -> bool:
        """One scheduling cycle. Returns True when a binding task was started (it owns a slot)."""
        pi = qpi.pod_info
        framework = self.profiles.get(pi.scheduler_name)
        current = self._pods.get(pi.key) if self._pods is not None else None
        if (framework is None or pi.deleting or current is None or _uid(current) != pi.uid
                or _assigned(current) or self.cache.get_pod(pi.uid) is not None):
            self.queue.done(pi.uid)
            return False
        cycle = self.queue.scheduling_cycle
        state = CycleState()
        started = time.perf_counter()
        try:
            result = framework.schedule(pi, state)
        except FitError as fit_error:
            self.cycle_seconds += time.perf_counter() - started
            self._on_unschedulable(framework, qpi, state, fit_error, cycle)
            return False
        node_name = result.node_name
        self.cache.assume_pod(pi, node_name)
        status = framework.run_reserve(state, pi, node_name)
        if status is None:
            status = framework.run_permit(state, pi, node_name)
            if status is not None and status.code != Code.WAIT:
                framework.run_unreserve(state, pi, node_name)
        if status is not None and status.code != Code.WAIT:
            self.cache.forget_pod(pi)
            self.cycle_seconds += time.perf_counter() - started
            self._on_error(qpi, status, cycle)
            return False
        self.queue.delete_nominated(pi.uid)
        self.cycle_seconds += time.perf_counter() - started
        self._spawn(self._binding_cycle(framework, qpi, state, node_name, cycle, status), f"bind {pi.key}")
        return True

    async def _binding_cycle(self, framework: Framework, qpi: QueuedPodInfo, state: CycleState, node_name: str,
                             cycle: int, permit: Status | None) -> None:
        pi = qpi.pod_info
        try:
            status: Status | None = None
            if permit is not None and permit.code == Code.WAIT:
                waiting = self.waiting_pods[pi.uid] = WaitingPod(pi, permit.reasons)
                try:
                    status = await asyncio.wait_for(asyncio.shield(waiting.future), permit.timeout)
                except TimeoutError:
                    status = Status(Code.UNSCHEDULABLE, (
                        f"rejected due to timeout after waiting {permit.timeout:g}s at plugin {permit.plugin}",),
                        permit.plugin)
                finally:
                    self.waiting_pods.pop(pi.uid, None)
            if status is None:
                try:
                    status = await framework.run_bind(state, pi, node_name)
                except NotFound:
                    # The pod is gone; nothing to retry.
                    self.cache.forget_pod(pi)
                    self.queue.delete(pi.uid)
                    return
                except Conflict as conflict:
                    status = error(f"binding rejected: {conflict}")
                except (ApiError, OSError) as failure:
                    status = error(f"binding rejected: {failure}")
                except Exception as failure:
                    # A bug in a Bind plugin must not leave the pod assumed and forgotten: log it
                    # with context and retry the pod after back-off.
                    log.exception("binding %s to %s failed", pi.key, node_name)
                    status = error(f"binding failed: {failure}")
            if status is None:
                self.cache.finish_binding(pi)
                self.queue.done(pi.uid)
                self.scheduled += 1
                self.recorder.event(pi.pod, "Normal", "Scheduled",
                                    f"Successfully assigned {pi.namespace}/{pi.name} to {node_name}")
                return
            self.bind_errors += 1
            framework.run_unreserve(state, pi, node_name)
            self.cache.forget_pod(pi)
            log.info("binding %s to %s failed: %s", pi.key, node_name, status.message())
            # Room was given back; pods waiting for it may fit now.
            self.queue.move_all_to_active_or_backoff("Pod/Delete")
            self._on_error(qpi, status, cycle)
        finally:
            self._binding_slots.release()

    def _on_error(self, qpi: QueuedPodInfo, status: Status, cycle: int) -> None:
        self.failed_attempts += 1
        qpi.unschedulable_plugins = {status.plugin} if status.plugin else set()
        self.queue.add_unschedulable(qpi, cycle, error=status.code == Code.ERROR)
        if status.code != Code.ERROR:
            self._report_unschedulable(qpi.pod_info, status.message(), None, False)
        else:
            self.recorder.event(qpi.pod_info.pod, "Warning", "FailedScheduling", status.message())

    def _on_unschedulable(self, framework: Framework, qpi: QueuedPodInfo, state: CycleState,
                          fit_error: FitError, cycle: int) -> None:
        self.failed_attempts += 1
        pi = qpi.pod_info
        nominated: str | None = None
        post_filter_ran = False
        if framework.post_filter_plugins and fit_error.num_all_nodes:
            post_filter_ran = True
            nominated, status = framework.run_post_filter(state, pi, fit_error.statuses)
            if status is not None:
                fit_error.post_filter_message = status.message()
        qpi.unschedulable_plugins = fit_error.unschedulable_plugins
        candidate = state.get(PREEMPTION)
        if nominated and isinstance(candidate, Candidate):
            self.queue.add_nominated(pi, nominated)
            self._spawn(self._preempt(pi, candidate), f"preempt for {pi.key}")
        self.queue.add_unschedulable(qpi, cycle)
        self._report_unschedulable(pi, fit_error.message(), nominated, post_filter_ran)

    def _report_unschedulable(self, pi: PodInfo, message: str, nominated: str | None, clear_nominated: bool) -> None:
        self.recorder.event(pi.pod, "Warning", "FailedScheduling", message)
        latest = self._pods.get(pi.key) if self._pods is not None else None
        status = ((latest if latest is not None and _uid(latest) == pi.uid else pi.pod).get("status")) or {}
        conditions = [c for c in status.get("conditions") or () if c.get("type") != "PodScheduled"]
        previous = next((c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), None)
        current_nominated = status.get("nominatedNodeName") or None
        wanted_nominated = nominated or (None if clear_nominated else current_nominated)
        if (previous is not None and previous.get("status") == "False" and previous.get("reason") == "Unschedulable"
                and previous.get("message") == message and current_nominated == wanted_nominated):
            return  # nothing new to tell
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastProbeTime": None,
                     "lastTransitionTime": (previous or {}).get("lastTransitionTime")
                     if previous is not None and previous.get("status") == "False" else _now()}
        patch: dict[str, Any] = {"status": {"conditions": [*conditions, condition]}}
        if wanted_nominated != current_nominated:
            patch["status"]["nominatedNodeName"] = wanted_nominated
        self._spawn(self._patch_status(pi, patch), f"status {pi.key}")

    async def _patch_status(self, pi: PodInfo, patch: dict[str, Any]) -> None:
        try:
            await self.client.patch("v1/pods", pi.name, patch, namespace=pi.namespace, subresource="status")
        except NotFound:
            pass
        except (ApiError, OSError) as failure:
            log.warning("could not update status of %s: %s", pi.key, failure)

    async def _preempt(self, pi: PodInfo, candidate: Candidate) -> None:
        """Carry out a preemption decision: evict the victims gracefully."""
        for victim in candidate.victims:
            try:
                await self.client.delete("v1/pods", victim.name, namespace=victim.namespace,
                                         preconditions={"uid": victim.uid} if victim.uid != victim.key else None)
            except NotFound:
                continue
            except (ApiError, OSError) as failure:
                log.warning("could not preempt %s for %s: %s", victim.key, pi.key, failure)
                continue
            self.recorder.event(victim.pod, "Normal", "Preempted",
                                f"Preempted by pod {pi.uid} on node {candidate.node_name}")
