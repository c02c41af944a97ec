"""The `cri` runtime: real containers through a CRI v1 runtime (containerd + runc), as Kubernetes does.

The kubelet is a gRPC client of the runtime's `RuntimeService` and `ImageService` (stubs generated in
the `container-runtime-interface-api` package). Pods are sandboxes with their own network namespace
(CNI bridge + host-local on the node's podCIDR), containers run from images with their own root file
system, PID namespace and cgroups.

Where pinnace differs from the kubelet:
- exec returns a local process (`ctr tasks exec` through the same containerd) rather than a URL to the
  runtime's streaming server, because the kubelet's own server already speaks kubectl's protocols;
- port-forward connects to the pod's IP from the node (the node reaches every local pod IP).
The kubelet owns the pod-level cgroup directories it hands to the runtime and removes them, because
containerd leaves them behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as rpc

from pinnace.kubelet.runtime.base import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    PodSandboxConfig,
    PodSandboxStatus,
    RuntimeFailure,
    RuntimeVersion,
    SandboxState,
)
from pinnace.kubelet.runtime.containerd import Containerd

log = logging.getLogger(__name__)

LOG_DIR_ANNOTATION = "pinnace.io/log-directory"
CPU_PERIOD_US = 100_000
WAIT_POLL_SECONDS = 0.2

_CONTAINER_STATES = {
    pb.CONTAINER_CREATED: ContainerState.CREATED,
    pb.CONTAINER_RUNNING: ContainerState.RUNNING,
    pb.CONTAINER_EXITED: ContainerState.EXITED,
    pb.CONTAINER_UNKNOWN: ContainerState.UNKNOWN,
}


def split_image_reference(image: str) -> str:
    return image.strip()


def docker_config_auth(docker_config: dict, image: str) -> pb.AuthConfig | None:
    """Credentials for `image` from a docker config JSON (`.dockerconfigjson` of an imagePullSecret)."""
    registry = image.split("/", 1)[0] if "/" in image and ("." in image.split("/", 1)[0] or ":" in image.split("/", 1)[0]) else "docker.io"
    for server, entry in (docker_config.get("auths") or {}).items():
        host = server.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if host in (registry, "index.docker.io" if registry == "docker.io" else registry):
            username, password = entry.get("username", ""), entry.get("password", "")
            if entry.get("auth") and not username:
                decoded = base64.b64decode(entry["auth"]).decode()
                username, _, password = decoded.partition(":")
            # containerd parses the address as a URL and compares its host with the image's registry.
            return pb.AuthConfig(username=username, password=password, server_address=f"https://{host}")
    return None


class CriRuntime:
    """A `Runtime` over CRI v1. Starts its own containerd unless given an endpoint."""

    def __init__(
        self,
        *,
        data_dir: str,
        pod_cidr: str,
        endpoint: str | None = None,
        bridge: str = "pinnace0",
        cgroup_root: str = "/pinnace",
        dns_servers: list[str] | None = None,
        cluster_domain: str = "cluster.local",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.pod_cidr = pod_cidr
        self.endpoint = endpoint
        self.bridge = bridge
        self.cgroup_root = "/" + cgroup_root.strip("/")
        self.dns_servers = dns_servers or []
        self.cluster_domain = cluster_domain
        self.containerd: Containerd | None = None
        self.channel: grpc.aio.Channel | None = None
        self.runtime: rpc.RuntimeServiceStub | None = None
        self.images: rpc.ImageServiceStub | None = None
        self._version = RuntimeVersion("containerd", "unknown")
        self._sandbox_configs: dict[str, pb.PodSandboxConfig] = {}

    # Life cycle

    async def start(self) -> None:
        if self.endpoint is None:
            self.containerd = Containerd(self.data_dir / "containerd", self.pod_cidr, bridge=self.bridge)
            await self.containerd.start()
            self.endpoint = self.containerd.endpoint
        self.channel = grpc.aio.insecure_channel(self.endpoint)
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)
        try:
            version = await self.runtime.Version(pb.VersionRequest(), timeout=10)
        except grpc.aio.AioRpcError as error:
            raise RuntimeFailure(f"the CRI endpoint {self.endpoint} does not answer: {error.details()}") from error
        self._version = RuntimeVersion(version.runtime_name, version.runtime_version)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.containerd is not None:
            # Running pods survive a containerd restart, so stopping it leaves them to be adopted later.
            await self.containerd.stop()

    def version(self) -> RuntimeVersion:
        return self._version

    @property
    def _rt(self) -> rpc.RuntimeServiceStub:
        if self.runtime is None:
            raise RuntimeFailure("the cri runtime is not started")
        return self.runtime

    async def _call(self, method, request, reason: str = "RunContainerError", timeout: float = 60):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise RuntimeFailure(error.details() or str(error.code()), reason=reason) from error

    # Pod sandboxes

    def _cgroup_parent(self, uid: str) -> str:
        return f"{self.cgroup_root}/pod{uid}"

    def _sandbox_config(self, config: PodSandboxConfig) -> pb.PodSandboxConfig:
        namespace_option = pb.NamespaceOption(
            network=pb.NODE if config.host_network else pb.POD,
            pid=pb.CONTAINER,
            ipc=pb.POD,
        )
        dns = None
        if self.dns_servers and not config.host_network:
            dns = pb.DNSConfig(
                servers=self.dns_servers,
                searches=[f"{config.namespace}.svc.{self.cluster_domain}", f"svc.{self.cluster_domain}", self.cluster_domain],
                options=["ndots:5"],
            )
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=config.name, namespace=config.namespace, uid=config.uid, attempt=0),
            hostname=config.hostname or config.name,
            log_directory=config.log_directory,
            dns_config=dns,
            labels=config.labels,
            annotations={LOG_DIR_ANNOTATION: config.log_directory},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self._cgroup_parent(config.uid),
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespace_option),
            ),
        )

    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str:
        if config.log_directory:
            Path(config.log_directory).mkdir(parents=True, exist_ok=True)
        sandbox_config = self._sandbox_config(config)
        reply = await self._call(self._rt.RunPodSandbox, pb.RunPodSandboxRequest(config=sandbox_config),
                                 reason="CreatePodSandboxError")
        self._sandbox_configs[reply.pod_sandbox_id] = sandbox_config
        return reply.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call(self._rt.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        status = await self.pod_sandbox_status(sandbox_id)
        await self._call(self._rt.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        self._sandbox_configs.pop(sandbox_id, None)
        if status is not None:
            await asyncio.to_thread(remove_cgroup_tree, self._cgroup_parent(status.uid))

    def _sandbox_status(self, sandbox: pb.PodSandboxStatus | pb.PodSandbox, ip: str | None = None) -> PodSandboxStatus:
        host_network = False
        linux = getattr(sandbox, "linux", None)
        if linux is not None and linux.namespaces.options.network == pb.NODE:
            host_network = True
        return PodSandboxStatus(
            id=sandbox.id,
            name=sandbox.metadata.name,
            namespace=sandbox.metadata.namespace,
            uid=sandbox.metadata.uid,
            state=SandboxState.READY if sandbox.state == pb.SANDBOX_READY else SandboxState.NOTREADY,
            created_at=sandbox.created_at / 1e9,
            ip=ip or None,
            host_network=host_network,
        )

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus | None:
        try:
            reply = await self._rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise RuntimeFailure(error.details() or str(error.code())) from error
        status = self._sandbox_status(reply.status, reply.status.network.ip)
        if status.host_network:
            status.ip = None
        return status

    async def list_pod_sandboxes(self) -> list[PodSandboxStatus]:
        reply = await self._call(self._rt.ListPodSandbox, pb.ListPodSandboxRequest())
        result = []
        for sandbox in reply.items:
            status = await self.pod_sandbox_status(sandbox.id)
            if status is not None:
                result.append(status)
        return result

    async def _config_of_sandbox(self, sandbox_id: str) -> pb.PodSandboxConfig:
        config = self._sandbox_configs.get(sandbox_id)
        if config is not None:
            return config
        # After a kubelet restart: rebuild what CreateContainer needs from the sandbox's status.
        reply = await self._call(self._rt.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=False))
        status = reply.status
        config = pb.PodSandboxConfig(
            metadata=status.metadata,
            log_directory=status.annotations.get(LOG_DIR_ANNOTATION, ""),
            labels=status.labels,
            annotations=status.annotations,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=self._cgroup_parent(status.metadata.uid)),
        )
        self._sandbox_configs[sandbox_id] = config
        return config

    # Images

    async def ensure_image(self, image: str, pull_policy: str = "IfNotPresent", docker_configs: list[dict] | None = None) -> str:
        """Make `image` present as `imagePullPolicy` says; returns the image id.

        Raises RuntimeFailure with reason ErrImagePull (pull failed) or ErrImageNeverPull.
        """
        if self.images is None:
            raise RuntimeFailure("the cri runtime is not started")
        spec = pb.ImageSpec(image=image)
        present = await self._call(self.images.ImageStatus, pb.ImageStatusRequest(image=spec))
        if present.image.id and pull_policy != "Always":
            return present.image.id
        if pull_policy == "Never":
            raise RuntimeFailure(f'Container image "{image}" is not present with pull policy of Never', reason="ErrImageNeverPull")
        auth = None
        for docker_config in docker_configs or []:
            auth = docker_config_auth(docker_config, image)
            if auth is not None:
                break
        try:
            reply = await self.images.PullImage(pb.PullImageRequest(image=spec, auth=auth), timeout=600)
        except grpc.aio.AioRpcError as error:
            raise RuntimeFailure(f'Failed to pull image "{image}": {error.details()}', reason="ErrImagePull") from error
        return reply.image_ref

    async def list_images(self) -> list[dict]:
        """Images as Node `status.images` lists them: names and sizeBytes."""
        if self.images is None:
            return []
        reply = await self._call(self.images.ListImages, pb.ListImagesRequest())
        return [
            {"names": list(image.repo_tags) + list(image.repo_digests), "sizeBytes": image.size}
            for image in reply.images
        ]

    async def remove_image(self, image: str) -> None:
        if self.images is not None:
            await self._call(self.images.RemoveImage, pb.RemoveImageRequest(image=pb.ImageSpec(image=image)))

    async def image_fs_usage(self) -> list[dict]:
        if self.images is None:
            return []
        reply = await self._call(self.images.ImageFsInfo, pb.ImageFsInfoRequest())
        return [{"mountpoint": fs.fs_id.mountpoint, "usedBytes": fs.used_bytes.value} for fs in reply.image_filesystems]

    # Containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sandbox_config = await self._config_of_sandbox(sandbox_id)
        resources = pb.LinuxContainerResources()
        if config.memory_limit_bytes:
            resources.memory_limit_in_bytes = config.memory_limit_bytes
        if config.cpu_limit_millis:
            resources.cpu_period = CPU_PERIOD_US
            resources.cpu_quota = max(1000, config.cpu_limit_millis * CPU_PERIOD_US // 1000)
        if config.cpu_request_millis:
            resources.cpu_shares = max(2, config.cpu_request_millis * 1024 // 1000)
        args = list(getattr(config, "args", None) or [])
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            sandbox_config=sandbox_config,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=config.name, attempt=config.attempt),
                image=pb.ImageSpec(image=config.image),
                command=list(config.command),
                args=args,
                working_dir=config.working_dir or "",
                envs=[pb.KeyValue(key=k, value=v) for k, v in config.env.items()],
                mounts=[pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.read_only)
                        for m in config.mounts],
                labels=config.labels,
                log_path=config.log_path or f"{config.name}/{config.attempt}.log",
                stdin=config.stdin,
                tty=config.tty,
                linux=pb.LinuxContainerConfig(resources=resources),
            ),
        )
        reply = await self._call(self._rt.CreateContainer, request, reason="CreateContainerError")
        return reply.container_id

    async def start_container(self, container_id: str) -> None:
        await self._call(self._rt.StartContainer, pb.StartContainerRequest(container_id=container_id), reason="RunContainerError")

    async def stop_container(self, container_id: str, timeout: float) -> None:
        await self._call(self._rt.StopContainer, pb.StopContainerRequest(container_id=container_id, timeout=int(timeout)),
                         timeout=timeout + 30)

    async def remove_container(self, container_id: str) -> None:
        await self._call(self._rt.RemoveContainer, pb.RemoveContainerRequest(container_id=container_id))

    def _status(self, status: pb.ContainerStatus, sandbox_id: str = "") -> ContainerStatus:
        state = _CONTAINER_STATES.get(status.state, ContainerState.UNKNOWN)
        return ContainerStatus(
            id=status.id,
            sandbox_id=sandbox_id,
            name=status.metadata.name,
            attempt=status.metadata.attempt,
            state=state,
            image=status.image.image,
            created_at=status.created_at / 1e9,
            started_at=status.started_at / 1e9 if status.started_at else None,
            finished_at=status.finished_at / 1e9 if status.finished_at else None,
            exit_code=status.exit_code if state == ContainerState.EXITED else None,
            reason=status.reason,
            message=status.message,
            log_path=status.log_path,
            labels=dict(status.labels),
        )

    async def container_status(self, container_id: str) -> ContainerStatus | None:
        try:
            reply = await self._rt.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id), timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise RuntimeFailure(error.details() or str(error.code())) from error
        sandbox_id = ""
        listing = await self._call(self._rt.ListContainers, pb.ListContainersRequest(filter=pb.ContainerFilter(id=container_id)))
        if listing.containers:
            sandbox_id = listing.containers[0].pod_sandbox_id
        return self._status(reply.status, sandbox_id)

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        container_filter = pb.ContainerFilter(pod_sandbox_id=sandbox_id) if sandbox_id else None
        listing = await self._call(self._rt.ListContainers, pb.ListContainersRequest(filter=container_filter))
        result = []
        for container in listing.containers:
            with contextlib.suppress(RuntimeFailure):
                reply = await self._rt.ContainerStatus(pb.ContainerStatusRequest(container_id=container.id), timeout=30)
                result.append(self._status(reply.status, container.pod_sandbox_id))
        return result

    async def wait_container(self, container_id: str) -> None:
        # containerd 1.6 has no CRI container events; poll the status.
        while True:
            status = await self.container_status(container_id)
            if status is None or status.state != ContainerState.RUNNING:
                return
            await asyncio.sleep(WAIT_POLL_SECONDS)

    # Streaming

    async def exec(self, container_id: str, command: list[str], *, stdin: bool, tty: bool) -> asyncio.subprocess.Process:
        if self.endpoint is None or not self.endpoint.startswith("unix://"):
            raise RuntimeFailure("exec needs a local containerd endpoint")
        exec_id = f"exec-{os.getpid()}-{time.monotonic_ns()}"
        argv = ["ctr", "--address", self.endpoint.removeprefix("unix://"), "--namespace", "k8s.io",
                "tasks", "exec", "--exec-id", exec_id]
        if tty:
            argv.append("--tty")
        argv += [container_id, *command]
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def exec_sync(self, container_id: str, command: list[str], timeout: float) -> tuple[int, bytes, bytes]:
        """Run a command to completion in a container (exec probes)."""
        reply = await self._call(self._rt.ExecSync, pb.ExecSyncRequest(container_id=container_id, cmd=command, timeout=int(max(1, timeout))),
                                 timeout=timeout + 10)
        return reply.exit_code, reply.stdout, reply.stderr

    async def port_forward(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        status = await self.pod_sandbox_status(sandbox_id)
        if status is None:
            raise RuntimeFailure(f"pod sandbox {sandbox_id} not found")
        host = status.ip or "127.0.0.1"
        return await asyncio.open_connection(host, port)

    # Statistics

    async def container_stats(self, container_id: str) -> dict:
        reply = await self._call(self._rt.ContainerStats, pb.ContainerStatsRequest(container_id=container_id))
        stats = reply.stats
        return {
            "cpu_usage_nano_seconds": stats.cpu.usage_core_nano_seconds.value,
            "memory_working_set_bytes": stats.memory.working_set_bytes.value,
            "timestamp": stats.cpu.timestamp / 1e9 if stats.cpu.timestamp else time.time(),
        }


def remove_cgroup_tree(parent: str) -> None:
    """Remove a pod's cgroup directories in every v1 hierarchy (and the cgroup2 mount)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        root = hierarchy / parent.strip("/")
        if not root.is_dir():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
