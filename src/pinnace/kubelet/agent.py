"""The kubelet: registers its Node, keeps its Lease, and runs the pods bound to it through a Runtime.

Wiring, as in Kubernetes:
- Registration creates the Node (or adopts an existing one) with capacity, allocatable, nodeInfo,
  addresses, the standard labels and the four conditions; `spec.podCIDR` comes from the Node (the
  node IPAM controller sets it) or, when it has none, from `KubeletConfig.pod_cidr`.
- A Lease in `kube-node-lease` is renewed every `lease_seconds`; the Node's status is posted every
  `status_seconds` or when a condition changes.
- One informer watches pods with `spec.nodeName=<node>`; every pod gets a `PodWorker` (pod_worker.py).
- After the first list, sandboxes whose pod is gone from the API are removed: pods deleted while the
  kubelet was down do not leave strays; running containers of pods that still exist are adopted.
- The kubelet API (:10250, TLS) and the read-only API (:10255, plain HTTP on 127.0.0.1) are in server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pinnace.kubelet.container_log_manager import ContainerLogManager
from pinnace.kubelet.pod_worker import PodWorker, iso
from pinnace.kubelet.runtime.base import Runtime
from pinnace.kubelet.volumes import VolumeManager

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.32.0-pinnace"
NODE_LEASE_NAMESPACE = "kube-node-lease"


class KubeletError(Exception):
    """A configuration error the user can act on."""


@dataclass
class KubeletConfig:
    node_name: str
    data_dir: str
    runtime: str = "process"
    pod_cidr: str | None = None  # used when the Node has no spec.podCIDR (no node IPAM controller)
    bridge: str | None = None  # default: pinnace<node_index>, one bridge per node on a shared host
    node_index: int = 0
    pod_cidr_wait_seconds: float = 10.0  # how long to wait for the node IPAM controller at start
    node_ip: str | None = None  # default: the first non-loopback IPv4 address, else 127.0.0.1
    port: int = 10250  # kubelet API (TLS); 0 disables
    address: str = "0.0.0.0"
    read_only_port: int = 10255  # 0 disables
    read_only_address: str = "127.0.0.1"
    client_ca_file: str | None = None  # when set, :10250 accepts only client certificates it signed,
    client_names: tuple[str, ...] = ("kube-apiserver-kubelet-client",)  # and only with these CNs
    tls_cert_file: str | None = None  # default: a self-signed certificate in the data dir
    tls_key_file: str | None = None
    max_pods: int = 110
    lease_seconds: float = 10.0
    status_seconds: float = 60.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    resync_seconds: float = 10.0
    volume_refresh_seconds: float = 30.0
    labels: dict[str, str] | None = None
    network: bool | None = None  # pod network namespaces; default: when root
    # Cluster DNS servers for pods' /etc/resolv.conf (dnsPolicy ClusterFirst). None: the cri runtime uses
    # 10.43.0.10, while process containers keep the host's resolv.conf and hosts files (they share the
    # host's filesystem; pointing them at a DNS server that may not be running breaks name lookups).
    cluster_dns: list[str] | None = None
    cluster_domain: str = "cluster.local"
    # stop() also kills the node's pods and removes their sandboxes, volumes and the bridge: set it for
    # an in-process kubelet whose pods should end with it (`pinnace up`). By default pods keep running
    # and a restarted kubelet adopts them.
    remove_pods_on_stop: bool = False
    eviction_memory_available: str = "100Mi"
    eviction_disk_available_percent: float = 5.0
    cri_endpoint: str | None = None  # runtime "cri": an existing CRI socket; default: our own containerd
    # Log rotation for runtimes that only write log files (cri), as the kubelet's containerLogMaxSize,
    # containerLogMaxFiles and containerLogMonitorInterval; the process runtime rotates its own files.
    container_log_max_size: str = "10Mi"
    container_log_max_files: int = 5
    container_log_monitor_interval: float = 10.0


def default_node_ip() -> str:
    for name, addresses in psutil.net_if_addrs().items():
        if name == "lo" or name.startswith(("pn", "veth", "docker", "cni", "flannel")):
            continue
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return "127.0.0.1"


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            return Path(path).read_text().strip()
    return ""


def os_image() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def make_runtime(config: KubeletConfig) -> Runtime:
    if config.runtime == "process":
        from pinnace.kubelet.runtime.process import ProcessRuntime

        bridge = config.bridge or f"pinnace{config.node_index}"
        return ProcessRuntime(config.data_dir, pod_cidr=None, bridge=bridge, network=config.network)  # type: ignore[return-value]
    if config.runtime == "cri":
        from pinnace.dns.server import CLUSTER_DNS_IP
        from pinnace.kubelet.runtime.cri import CriRuntime

        endpoint = config.cri_endpoint
        if endpoint and "://" not in endpoint:
            endpoint = f"unix://{endpoint}"
        return CriRuntime(  # type: ignore[return-value]
            data_dir=config.data_dir,
            pod_cidr=None,  # set_pod_cidr() once registration tells the Node's (or the configured) podCIDR
            endpoint=endpoint,
            bridge=config.bridge or f"pinnace{config.node_index}",
            # One cgroup parent per node, so nodes sharing a machine never remove each other's cgroups.
            cgroup_root=f"/pinnace/{config.node_name}",
            dns_servers=config.cluster_dns if config.cluster_dns is not None else [CLUSTER_DNS_IP],
            cluster_domain=config.cluster_domain,
        )
    raise KubeletError(f"unknown runtime {config.runtime!r}; choose process or cri")


def container_log_manager(config: KubeletConfig, runtime: Any) -> ContainerLogManager | None:
    """The log rotation of a runtime that can reopen container logs (CRI), with the kubelet's checks."""
    if not hasattr(runtime, "reopen_container_log"):
        return None
    from pinnace.api.quantity import bytes_of

    try:
        max_size = bytes_of(config.container_log_max_size)
    except ValueError:
        raise KubeletError(f"invalid container log max size {config.container_log_max_size!r}: "
                           "use a quantity such as 10Mi") from None
    if max_size <= 0:
        raise KubeletError("the container log max size must be positive")
    if config.container_log_max_files < 2:
        raise KubeletError("the container log max files must be at least 2")
    if config.container_log_monitor_interval <= 0:
        raise KubeletError("the container log monitor interval must be positive")
    return ContainerLogManager(runtime, max_size, config.container_log_max_files, config.container_log_monitor_interval)


class Kubelet:
    def __init__(self, client: Any, config: KubeletConfig, runtime: Runtime | None = None) -> None:
        from pinnace.client import EventRecorder, InformerFactory

        self.client = client
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.runtime: Any = runtime or make_runtime(config)
        self.node_name = config.node_name
        self.node_ip = config.node_ip or default_node_ip()
        self.recorder = EventRecorder(client, component="kubelet", host=config.node_name)
        self.factory = InformerFactory(client)
        self.pods = self.factory.informer("v1/pods", field_selector=f"spec.nodeName={config.node_name}")
        self.workers: dict[str, PodWorker] = {}
        self.node: dict | None = None
        self.conditions: dict[str, tuple[str, str, str]] = {}
        self.pod_cidr: str | None = None
        self.capacity: dict[str, str] = {}
        self.allocatable: dict[str, str] = {}
        self.tasks: list[asyncio.Task] = []
        self.servers: list[Any] = []
        self.routes: Any = None  # host-gw routes to other nodes' pods (network/routes.py), root only
        self.started_at = time.time()
        self.port = config.port  # the bound ports, once the servers run (0 in the config picks a free one)
        self.read_only_port = config.read_only_port
        self.pod_statuses: dict[str, dict] = {}
        self.host_network_warning: str | None = None
        self.sandbox_uids: set[str] = set()  # pods with runtime state when the kubelet started
        self.volumes = VolumeManager(config.data_dir, self.get_object, self.allocatable, os.geteuid() == 0,
                                     request_token=self.request_token)
        self._services_cache: dict[str, tuple[float, list[dict]]] = {}
        self._status_changed = asyncio.Event()
        from pinnace.kubelet.images import ImageManager

        # Runtimes that run images (cri) pull them, report them on the Node and garbage-collect them.
        self.images: ImageManager | None = ImageManager(self) if hasattr(self.runtime, "pull_image") else None
        self.container_logs = container_log_manager(config, self.runtime)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.runtime.start()
        self.sandbox_uids = {sandbox.uid for sandbox in await self.runtime.list_pod_sandboxes()}
        self.capacity.update(self.node_capacity())
        self.allocatable.update(self.capacity)
        await self.register()
        if not self.pod_cidr and getattr(self.runtime, "network_enabled", False):
            await self.wait_for_pod_cidr()
        if self.pod_cidr and hasattr(self.runtime, "set_pod_cidr"):
            self.runtime.set_pod_cidr(self.pod_cidr)
        if not getattr(self.runtime, "isolated_network", True):
            reason = "not running as root" if os.geteuid() != 0 else "the node has no pod CIDR"
            if self.config.network is False:
                reason = "pod networking is disabled"
            self.host_network_warning = (
                f"pods on node {self.node_name} share the host network ({reason}): "
                "no per-pod IPs, and containers of different pods can collide on ports"
            )
            log.warning(self.host_network_warning)
            self.recorder.event(self.node or self.node_ref(), "Warning", "HostNetworkPods", self.host_network_warning)
        if os.geteuid() == 0 and getattr(self.runtime, "isolated_network", False):
            from pinnace.kubelet.network.routes import NodeRoutes

            self.routes = NodeRoutes(self.client, self.node_name)
            await self.routes.start()
        from pinnace.kubelet.server import start_servers

        self.servers = await start_servers(self)
        await self.post_node_status(force=True)
        self.pods.add_handler(on_add=self.on_pod, on_update=lambda old, new: self.on_pod(new), on_delete=self.on_pod_deleted)
        await self.factory.start()
        await self.factory.wait_synced()
        await self.remove_orphans()
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self.lease_loop(), name="kubelet lease"),
            loop.create_task(self.status_loop(), name="kubelet node status"),
        ]
        if self.images is not None:
            self.tasks.append(loop.create_task(self.images.gc_loop(), name="kubelet image gc"))
        if self.container_logs is not None:
            self.tasks.append(loop.create_task(self.container_logs.run(), name="kubelet container log rotation"))
        self.recorder.event(self.node or self.node_ref(), "Normal", "Starting", "Starting kubelet.")

    async def stop(self, close_runtime: bool = True, remove_pods: bool | None = None) -> None:
        """Stop the kubelet. With `remove_pods` (default: `config.remove_pods_on_stop`) every container
        is killed and the sandboxes, volumes and bridge removed; otherwise pods keep running and the
        next kubelet on this data dir adopts them."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.factory.stop()
        if self.routes is not None:
            await self.routes.stop()
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))
        for server in self.servers:
            await server.cleanup()
        if remove_pods is None:
            remove_pods = self.config.remove_pods_on_stop
        if remove_pods:
            await remove_all_pods(self.runtime, self.volumes, self)
        if close_runtime or remove_pods:
            await self.runtime.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.recorder.close(), 2)

    # ----------------------------------------------------------------- pods

    def on_pod(self, pod: dict) -> None:
        key = f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"
        worker = self.workers.get(key)
        if worker is not None and worker.uid != pod["metadata"]["uid"]:
            worker.update(None)  # a new pod with the same name: the old one is gone
            worker = None
        if worker is None or worker.done.is_set():
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not self.has_sandbox_state(pod):
                # Finished before this kubelet saw it: nothing to run, nothing to clean; only deletion.
                if not pod["metadata"].get("deletionTimestamp"):
                    return
            worker = PodWorker(self, key, pod)
            self.workers[key] = worker
            worker.start()
        else:
            worker.update(pod)

    def has_sandbox_state(self, pod: dict) -> bool:
        return pod["metadata"]["uid"] in self.sandbox_uids

    def on_pod_deleted(self, pod: dict) -> None:
        key = f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"
        worker = self.workers.get(key)
        if worker is not None and worker.uid == pod["metadata"]["uid"]:
            worker.update(None)
        self.pod_statuses.pop(key, None)

    async def remove_orphans(self) -> None:
        live = {pod["metadata"]["uid"] for pod in self.pods.list()}
        for sandbox in await self.runtime.list_pod_sandboxes():
            if sandbox.uid not in live:
                log.info("removing sandbox of pod %s/%s deleted while the kubelet was away", sandbox.namespace, sandbox.name)
                await self.runtime.remove_pod_sandbox(sandbox.id)
                await asyncio.to_thread(self.volumes.teardown, sandbox.uid)
                await asyncio.to_thread(self.remove_pod_logs, sandbox.uid)
        for container in await self.runtime.list_containers():
            if container.sandbox_id not in {s.id for s in await self.runtime.list_pod_sandboxes()}:
                await self.runtime.remove_container(container.id)

    def pod_status_changed(self, key: str, status: dict) -> None:
        self.pod_statuses[key] = status

    def pod_log_dir(self, pod: dict) -> Path:
        metadata = pod["metadata"]
        return self.data_dir / "logs" / f"{metadata.get('namespace', 'default')}_{metadata['name']}_{metadata['uid']}"

    def remove_pod_logs(self, uid: str) -> None:
        for path in (self.data_dir / "logs").glob(f"*_{uid}"):
            shutil.rmtree(path, ignore_errors=True)

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        return self.workers.get(f"{namespace}/{name}")

    async def get_object(self, resource: str, namespace: str, name: str) -> dict | None:
        from pinnace.client import NotFound

        try:
            return await self.client.get(resource, name, namespace=namespace)
        except NotFound:
            return None

    async def request_token(self, namespace: str, service_account: str, spec: dict) -> dict:
        """TokenRequest for a projected serviceAccountToken; a node may ask only for its own pods'."""
        from pinnace.client import ApiError
        from pinnace.kubelet.volumes import VolumeError

        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            result = await self.client.post_subresource("v1/serviceaccounts", service_account, "token", body,
                                                        namespace=namespace)
        except (ApiError, ConnectionError) as error:  # both retried by the pod worker, as FailedMount
            raise VolumeError(f'failed to fetch token for service account "{service_account}": {error}') from error
        return result.get("status") or {}

    async def services_for(self, pod: dict) -> list[dict]:
        """Services whose variables the pod's containers get: its namespace's, plus `kubernetes` (default)."""
        if not pod["spec"].get("enableServiceLinks", True):
            namespaces = ["default"]
        else:
            namespaces = list(dict.fromkeys([pod["metadata"].get("namespace", "default"), "default"]))
        result: list[dict] = []
        for namespace in namespaces:
            cached = self._services_cache.get(namespace)
            if cached is None or time.time() - cached[0] > 5:
                try:
                    items = (await self.client.list("v1/services", namespace=namespace)).get("items") or []
                except Exception as error:  # service links are best effort; the pod must still start
                    log.warning("listing services in %s: %s", namespace, error)
                    items = []
                cached = (time.time(), items)
                self._services_cache[namespace] = cached
            for service in cached[1]:
                if namespace == pod["metadata"].get("namespace", "default") and pod["spec"].get("enableServiceLinks", True):
                    result.append(service)
                elif service["metadata"]["name"] == "kubernetes":
                    result.append(service)
        return result

    # ----------------------------------------------------------------- node

    def node_ref(self) -> dict:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "uid": self.node_name}}

    def node_capacity(self) -> dict[str, str]:
        disk = shutil.disk_usage(self.data_dir)
        return {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{psutil.virtual_memory().total // 1024}Ki",
            "ephemeral-storage": f"{disk.total // 1024}Ki",
            "pods": str(self.config.max_pods),
        }

    def node_conditions(self) -> dict[str, tuple[str, str, str]]:
        """type -> (status, reason, message)"""
        memory_low, disk_low, pids_low = self.pressure()
        return {
            "MemoryPressure": ("True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
            if memory_low
            else ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            "DiskPressure": ("True", "KubeletHasDiskPressure", "kubelet has disk pressure")
            if disk_low
            else ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            "PIDPressure": ("True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
            if pids_low
            else ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
        }

    def pressure(self) -> tuple[bool, bool, bool]:
        from pinnace.api.quantity import bytes_of

        memory_low = psutil.virtual_memory().available < bytes_of(self.config.eviction_memory_available)
        disk = shutil.disk_usage(self.data_dir)
        disk_low = disk.free * 100 / max(disk.total, 1) < self.config.eviction_disk_available_percent
        try:
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
            pids_low = len(psutil.pids()) > pid_max * 0.95
        except (OSError, ValueError):
            pids_low = False
        return memory_low, disk_low, pids_low

    def node_status(self) -> dict:
        now = iso(time.time())
        old = {c["type"]: c for c in ((self.node or {}).get("status") or {}).get("conditions") or []}
        conditions = []
        for kind, (status, reason, message) in self.node_conditions().items():
            previous = old.get(kind)
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": previous["lastTransitionTime"]
                    if previous and previous.get("status") == status and previous.get("lastTransitionTime")
                    else now,
                }
            )
        runtime_version = self.runtime.version()
        boot_id = ""
        with contextlib.suppress(OSError):
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.allocatable),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": socket.gethostname()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": machine_id(),
                "systemUUID": machine_id(),
                "bootID": boot_id,
                "kernelVersion": platform.release(),
                "osImage": os_image(),
                "containerRuntimeVersion": f"{runtime_version.runtime_name}://{runtime_version.runtime_version}",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": go_arch(),
            },
        }

    def node_labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": go_arch(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": go_arch(),
        }
        labels.update(self.config.labels or {})
        return labels

    async def register(self) -> None:
        from pinnace.client import AlreadyExists

        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.node_labels()},
            "spec": {},
        }
        if self.config.pod_cidr:
            node["spec"] = {"podCIDR": self.config.pod_cidr, "podCIDRs": [self.config.pod_cidr]}
        delay = 0.2
        while True:
            try:
                try:
                    self.node = await self.client.create("v1/nodes", node)
                except AlreadyExists:
                    existing = await self.client.get("v1/nodes", self.node_name)
                    patch: dict = {"metadata": {"labels": self.node_labels()}}
                    if self.config.pod_cidr and not (existing.get("spec") or {}).get("podCIDR"):
                        patch["spec"] = {"podCIDR": self.config.pod_cidr, "podCIDRs": [self.config.pod_cidr]}
                    self.node = await self.client.patch("v1/nodes", self.node_name, patch, patch_type="merge")
                break
            except (OSError, ConnectionError) as error:
                log.warning("registering node %s: %s; retrying", self.node_name, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        self.pod_cidr = (self.node.get("spec") or {}).get("podCIDR") or self.config.pod_cidr

    async def wait_for_pod_cidr(self) -> None:
        """Give the node IPAM controller a moment to assign a pod CIDR, so the first pods get their own IPs."""
        deadline = time.monotonic() + self.config.pod_cidr_wait_seconds
        while time.monotonic() < deadline:
            node = await self.client.get("v1/nodes", self.node_name)
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                self.node, self.pod_cidr = node, cidr
                return
            await asyncio.sleep(0.2)

    async def post_node_status(self, force: bool = False) -> None:
        conditions = {kind: value for kind, value in self.node_conditions().items()}
        if not force and conditions == self.conditions:
            # Compare with the Node as the API server holds it too, as Kubernetes' kubelet does: the node
            # lifecycle controller marks a node it lost touch with Unknown, and the next check sets it right.
            self.node = await self.client.get("v1/nodes", self.node_name)
            posted = {c.get("type"): c.get("status") for c in (self.node.get("status") or {}).get("conditions") or []}
            if all(posted.get(kind) == status for kind, (status, _, _) in conditions.items()):
                return
        status = self.node_status()
        if self.images is not None:
            with contextlib.suppress(Exception):  # the images are informative; never block the heartbeat
                status["images"] = await self.images.node_images()
        self.node = await self.client.patch("v1/nodes", self.node_name, {"status": status}, patch_type="merge", subresource="status")
        self.conditions = conditions
        if not self.pod_cidr:
            cidr = (self.node.get("spec") or {}).get("podCIDR")
            if cidr and hasattr(self.runtime, "set_pod_cidr"):
                # The node IPAM controller assigned a CIDR after we registered: new pods get their own IPs.
                self.pod_cidr = cidr
                self.runtime.set_pod_cidr(cidr)

    async def status_loop(self) -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(min(10.0, self.config.status_seconds))
            try:
                force = time.monotonic() - last_full >= self.config.status_seconds
                await self.post_node_status(force=force)
                if force:
                    last_full = time.monotonic()
                await self.evict_if_pressured()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the API server may be restarting; keep trying
                log.warning("posting node status: %s", error)

    async def lease_loop(self) -> None:
        from pinnace.client import AlreadyExists, NotFound

        while True:
            now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z"
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": NODE_LEASE_NAMESPACE},
                "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": now},
            }
            try:
                try:
                    await self.client.patch(
                        "coordination.k8s.io/v1/leases",
                        self.node_name,
                        {"spec": lease["spec"]},
                        namespace=NODE_LEASE_NAMESPACE,
                        patch_type="merge",
                    )
                except NotFound:
                    try:
                        await self.client.create("coordination.k8s.io/v1/leases", lease, namespace=NODE_LEASE_NAMESPACE)
                    except AlreadyExists:
                        pass
                    except NotFound:
                        with contextlib.suppress(AlreadyExists):
                            await self.client.create(
                                "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NODE_LEASE_NAMESPACE}}
                            )
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep renewing through API server restarts
                log.warning("renewing lease: %s", error)
            await asyncio.sleep(self.config.lease_seconds)

    async def evict_if_pressured(self) -> None:
        """Node-pressure eviction: BestEffort pods first, then Burstable, one per round."""
        memory_low, disk_low, _ = self.pressure()
        if not (memory_low or disk_low):
            return
        from pinnace.kubelet.container_spec import qos_class

        resource = "memory" if memory_low else "ephemeral-storage"
        candidates = [w for w in self.workers.values() if w.pod and w.final_phase is None and not w.terminating]
        for qos in ("BestEffort", "Burstable"):
            victims = [w for w in candidates if qos_class(w.pod) == qos]  # type: ignore[arg-type]
            if victims:
                victim = victims[0]
                message = f"The node was low on resource: {resource}."
                self.recorder.event(victim.pod, "Warning", "Evicted", message)  # type: ignore[arg-type]
                await victim.kill_all(victim.grace_period(None))
                victim.final_phase, victim.final_reason, victim.final_message = "Failed", "Evicted", message
                victim.wake.set()
                return


async def remove_all_pods(runtime: Any, volumes: VolumeManager, kubelet: Kubelet | None = None) -> None:
    """Kill every container of this node and remove its sandboxes, volumes, logs and bridge."""
    for sandbox in await runtime.list_pod_sandboxes():
        await runtime.remove_pod_sandbox(sandbox.id)
        await asyncio.to_thread(volumes.teardown, sandbox.uid)
        if kubelet is not None:
            await asyncio.to_thread(kubelet.remove_pod_logs, sandbox.uid)
    for container in await runtime.list_containers():
        await runtime.remove_container(container.id)
    if hasattr(runtime, "delete_bridge") and getattr(runtime, "network_enabled", False):
        await runtime.delete_bridge()


async def cleanup_node(data_dir: str, bridge: str = "pinnace0", pod_cidr: str | None = None) -> None:
    """Remove what a node agent left on this machine (for `pinnace down` after the agent is gone):
    its running containers, network namespaces, pod addresses, cgroups, volumes and bridge."""
    from pinnace.kubelet.runtime.process import ProcessRuntime

    runtime = ProcessRuntime(data_dir, pod_cidr=pod_cidr, bridge=bridge)
    await runtime.start()
    for sandbox in await runtime.list_pod_sandboxes():
        if sandbox.ip and runtime.ipam is None:
            # The pod CIDR is only needed to find the bridge's address; any record names the network.
            runtime.set_pod_cidr(sandbox.ip.rsplit(".", 1)[0] + ".0/24")
            break
    try:
        await remove_all_pods(runtime, VolumeManager(data_dir, _no_objects, {}, os.geteuid() == 0))
        if runtime.net is None and runtime.network_enabled:
            from pinnace.kubelet.network.bridge import BridgeNetwork

            await asyncio.to_thread(BridgeNetwork(bridge, "0.0.0.0", 0).delete_bridge)
    finally:
        await runtime.close()


async def _no_objects(resource: str, namespace: str, name: str) -> dict | None:
    return None
