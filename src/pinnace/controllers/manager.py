"""The controller manager: every controller, on one shared InformerFactory, while holding the leader Lease.

    manager = ControllerManager(client, ControllerConfig(node_monitor_grace_period=4.0))
    await manager.start()        # campaigns for kube-system/kube-controller-manager, then runs
    ...
    await manager.stop()

Only the leader reconciles: several managers may run for availability, and a second one takes over when
the first stops renewing the Lease. `controllers=` picks a subset by name (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pinnace.client import Client, EventRecorder, InformerFactory, LeaderElector
from pinnace.controllers.base import BaseController, ControllerConfig

log = logging.getLogger(__name__)

# name -> "module:Class", in start order. Modules load lazily so one missing dependency cannot stop all.
CONTROLLERS: dict[str, str] = {
    "replicaset": "pinnace.controllers.replicaset:ReplicaSetController",
    "replicationcontroller": "pinnace.controllers.replicaset:ReplicationControllerController",
    "deployment": "pinnace.controllers.deployment:DeploymentController",
    "endpoints": "pinnace.controllers.endpoints:EndpointsController",
    "endpointslice": "pinnace.controllers.endpoints:EndpointSliceController",
    "nodelifecycle": "pinnace.controllers.nodelifecycle:NodeLifecycleController",
    "nodeipam": "pinnace.controllers.nodeipam:NodeIpamController",
    "garbagecollector": "pinnace.controllers.garbagecollector:GarbageCollector",
    "namespace": "pinnace.controllers.namespace:NamespaceController",
    "serviceaccount": "pinnace.controllers.serviceaccounts:ServiceAccountsController",
    "job": "pinnace.controllers.job:JobController",
    "cronjob": "pinnace.controllers.cronjob:CronJobController",
    "daemonset": "pinnace.controllers.daemonset:DaemonSetController",
    "statefulset": "pinnace.controllers.statefulset:StatefulSetController",
    "disruption": "pinnace.controllers.disruption:DisruptionController",
    "horizontalpodautoscaling": "pinnace.controllers.hpa:HorizontalPodAutoscalerController",
}

LEASE_NAME = "kube-controller-manager"


def load(name: str) -> type[BaseController]:
    module_name, _, class_name = CONTROLLERS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


class ControllerManager:
    def __init__(self, client: Client, config: ControllerConfig | Mapping[str, Any] | None = None, *,
                 controllers: Iterable[str] | None = None, leader_elect: bool = True,
                 identity: str | None = None, lease_duration: float = 15.0) -> None:
        if isinstance(config, Mapping):
            known = {f.name for f in dataclasses.fields(ControllerConfig)}
            config = ControllerConfig(**{k: v for k, v in config.items() if k in known})
        self.client = client
        self.config = config or ControllerConfig()
        self.names = list(controllers) if controllers is not None else list(CONTROLLERS)
        unknown = [n for n in self.names if n not in CONTROLLERS]
        if unknown:
            raise ValueError(f"unknown controllers: {', '.join(unknown)}; known: {', '.join(CONTROLLERS)}")
        self.leader_elect = leader_elect
        self.elector = LeaderElector(client, LEASE_NAME, namespace="kube-system", identity=identity,
                                     lease_duration=lease_duration, renew_deadline=lease_duration * 2 / 3,
                                     retry_period=min(2.0, lease_duration / 7.5)) if leader_elect else None
        self.controllers: list[BaseController] = []
        self.factory: InformerFactory | None = None
        self._task: asyncio.Task[None] | None = None
        self.running = asyncio.Event()  # set while leading with controllers started

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="controller-manager")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_running(self, timeout: float | None = None) -> None:
        """Until this manager leads and its controllers' caches are being filled."""
        await asyncio.wait_for(self.running.wait(), timeout)

    async def run(self) -> None:
        """Campaign and lead until cancelled (or just lead, without leader election)."""
        if self.elector is None:
            await self._lead()
        else:
            await self.elector.run(self._lead)

    async def _lead(self) -> None:
        factory = InformerFactory(self.client)
        recorder = EventRecorder(self.client, component="controller-manager")
        self.factory = factory
        self.controllers = []
        for name in self.names:
            controller = load(name)(self.client, factory, recorder, workers=self.config.workers, config=self.config)
            controller.ensure_setup()
            self.controllers.append(controller)
        tasks = [asyncio.create_task(c.run(), name=f"controller:{c.name}") for c in self.controllers]
        self.running.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.running.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for controller in self.controllers:
                stop = getattr(controller, "shutdown", None)
                if stop is not None:
                    with contextlib.suppress(Exception):
                        await stop()
            await factory.stop()
            with contextlib.suppress(Exception):
                await recorder.close()
