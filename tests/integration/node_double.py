"""A stand-in for node agents (and a trivial scheduler), for controller tests only.

It registers Node objects with Ready conditions and renews their Leases in kube-node-lease, binds pods
without a node to a live node (round-robin), reports bound pods Running and Ready with a pod IP, and
finishes graceful deletions at once, as a kubelet would after stopping the containers. Pods labelled
`test.pinnace.dev/exit: "0"` or `"1"` end Succeeded or Failed instead (for Jobs). `stop(node)` makes one
node go silent: no Lease renewals and no pod handling, as if it had lost power.

Also here, for the controller tests: `start_cluster` (a ControllerManager plus this double), `eventually`
and a Deployment template.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pinnace.client import AlreadyExists, ApiError, Client, InformerFactory, NotFound
from pinnace.controllers.base import ControllerConfig
from pinnace.controllers.manager import ControllerManager

EXIT_LABEL = "test.pinnace.dev/exit"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeDouble:
    def __init__(self, client: Client, nodes: tuple[str, ...] = ("node-1", "node-2"), *, bind: bool = True,
                 ready_delay: float = 0.0, lease_interval: float = 1.0, workers: int = 8) -> None:
        self.client = client
        self.names = list(nodes)
        self.alive: set[str] = set()
        self.bind = bind
        self.ready_delay = ready_delay
        self.lease_interval = lease_interval
        self.workers = workers
        self.factory = InformerFactory(client)
        self.pods = self.factory.informer("v1/pods")
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued: set[str] = set()
        self._ips = itertools.count(2)
        self._next_node = itertools.count()
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> NodeDouble:
        with contextlib.suppress(AlreadyExists):
            await self.client.create("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": "kube-node-lease"}})
        for name in self.names:
            await self.add_node(name)
        self.pods.add_handler(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        await self.factory.start()
        await self.factory.wait_synced(timeout=30)
        self._tasks.append(asyncio.create_task(self._renew_loop()))
        self._tasks += [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        return self

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.factory.stop()

    # --- nodes ----------------------------------------------------------------------------------------

    async def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                "spec": {}}
        with contextlib.suppress(AlreadyExists):
            await self.client.create("v1/nodes", body)
        stamp = _now()
        status = {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                  "message": "node double is ready", "lastHeartbeatTime": stamp,
                                  "lastTransitionTime": stamp}],
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                  "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                  "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"}}
        await self.client.patch("v1/nodes", name, {"status": status}, patch_type="merge", subresource="status")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}}
        with contextlib.suppress(AlreadyExists):
            await self.client.create("coordination.k8s.io/v1/leases", lease, namespace="kube-node-lease")
        if name not in self.names:
            self.names.append(name)
        self.alive.add(name)
        for pod in self.pods.list():
            self._enqueue(pod)

    async def remove_node(self, name: str) -> None:
        self.alive.discard(name)
        with contextlib.suppress(NotFound):
            await self.client.delete("v1/nodes", name)

    def set_binding(self, bind: bool) -> None:
        """Stop or resume binding pods to nodes (unbound pods stay Pending, never ready)."""
        self.bind = bind
        if bind:
            for pod in self.pods.list():
                self._enqueue(pod)

    def stop(self, name: str) -> None:
        """The node goes silent: its Lease stops being renewed and its pods are no longer handled."""
        self.alive.discard(name)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_interval)
            for name in list(self.alive):
                with contextlib.suppress(ApiError):
                    await self.client.patch("coordination.k8s.io/v1/leases", name,
                                            {"spec": {"renewTime": _micro_now()}}, namespace="kube-node-lease",
                                            patch_type="merge")

    # --- pods -----------------------------------------------------------------------------------------

    def _enqueue(self, pod: dict[str, Any]) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            pod = self.pods.get(key)
            if pod is None:
                continue
            try:
                await self._handle(pod)
            except NotFound:
                pass
            except ApiError:
                self._enqueue(pod)  # a conflict: try again with the newer object
                await asyncio.sleep(0.05)

    async def _handle(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        node = spec.get("nodeName")
        if meta.get("deletionTimestamp"):
            if node is None or node in self.alive:
                await self.client.delete("v1/pods", meta["name"], namespace=meta["namespace"], grace_period_seconds=0)
            return
        if not node:
            if self.bind and self.alive:
                live = sorted(self.alive)
                target = live[next(self._next_node) % len(live)]
                await self.client.post_subresource(
                    "v1/pods", meta["name"], "binding",
                    {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                     "target": {"apiVersion": "v1", "kind": "Node", "name": target}},
                    namespace=meta["namespace"])
            return
        if node not in self.alive or status.get("phase") in ("Running", "Succeeded", "Failed"):
            return
        if self.ready_delay:
            await asyncio.sleep(self.ready_delay)
        stamp = _now()
        exit_code = (meta.get("labels") or {}).get(EXIT_LABEL)
        containers = spec.get("containers") or []
        ip = status.get("podIP") or f"10.42.{next(self._ips) // 250}.{next(self._ips) % 250 + 2}"
        if exit_code is not None:
            phase = "Succeeded" if exit_code == "0" else "Failed"
            container_statuses = [{"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                                   "imageID": "", "state": {"terminated": {"exitCode": int(exit_code),
                                                                             "reason": "Completed" if exit_code == "0" else "Error",
                                                                             "startedAt": stamp, "finishedAt": stamp}}}
                                  for c in containers]
            ready = "False"
        else:
            phase = "Running"
            container_statuses = [{"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""),
                                   "imageID": "", "started": True, "state": {"running": {"startedAt": stamp}}}
                                  for c in containers]
            ready = "True"
        new_status = {
            "phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": stamp,
            "conditions": [{"type": t, "status": "True" if t in ("PodScheduled", "Initialized") else ready,
                            "lastTransitionTime": stamp} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": container_statuses,
        }
        await self.client.patch("v1/pods", meta["name"], {"status": new_status}, namespace=meta["namespace"],
                                patch_type="merge", subresource="status")


# --- test helpers ---------------------------------------------------------------------------------
async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns a truthy value; fail with its last result after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (AssertionError, NotFound) as error:
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")


class Cluster:
    def __init__(self, client: Client, manager: ControllerManager, nodes: NodeDouble) -> None:
        self.client = client
        self.manager = manager
        self.nodes = nodes

    async def pods(self, namespace: str = "default", selector: str | None = None) -> list[dict]:
        return (await self.client.list("v1/pods", namespace=namespace, label_selector=selector))["items"]


async def start_cluster(client: Client, *, nodes: tuple[str, ...] = ("node-1", "node-2"),
                        controllers: list[str] | None = None, **config: Any) -> Cluster:
    double = await NodeDouble(client, nodes).start()
    manager = ControllerManager(client, ControllerConfig(**config), controllers=controllers)
    await manager.start()
    await manager.wait_running(timeout=30)
    return Cluster(client, manager, double)


async def stop_cluster(cluster: Cluster) -> None:
    await cluster.manager.stop()
    await cluster.nodes.close()


def deployment(name: str, replicas: int = 3, image: str = "app:1", **spec: Any) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep", "1d"]}]}},
                 **spec},
    }
