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

Pod statuses get what the kubelet reports over CRI: `containerID` is `<runtime name>://<id>`
(`containerd://` and the 64-hex id), `imageID` the container status's `image_ref` (the image's repo
digest, or `sha256:<image id>` for an image that has none, as containerd answers). containerd writes
the container log files but never rotates them; the kubelet's container log manager does, with
`reopen_container_log`.
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
from pinnace.kubelet.runtime.oci_archive import PAUSE_IMAGE

log = logging.getLogger(__name__)

LOG_DIR_ANNOTATION = "pinnace.io/log-directory"
# The image as the pod spec names it: containerd reports a normalized tag (docker.io/library/...), and
# the kubelet compares the running image with the spec's to restart containers on an image change.
IMAGE_LABEL = "pinnace.io/image"
PRIVILEGED_ANNOTATION = "pinnace.io/privileged"
SUPERVISE_SECONDS = 1.0
START_TIMEOUT_SECONDS = 30.0
# What the kubelet masks and makes read-only in /proc and /sys for unprivileged containers (procMount Default).
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
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
        pod_cidr: str | None,
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
        self._supervisor: asyncio.Task | None = None
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._poller: asyncio.Task | None = None
        self._container_sandboxes: dict[str, str] = {}
        self._sandbox_networks: dict[str, tuple[str | None, bool]] = {}  # sandbox id -> (IP, host network)
        # Pods always get their own network namespace here; the kubelet waits for a pod CIDR at start.
        self.network_enabled = True
        self.isolated_network = True
        self.mount_namespaces = True

    # Life cycle

    async def start(self) -> None:
        if self.endpoint is None:
            self.containerd = Containerd(self.data_dir / "containerd", self.pod_cidr, bridge=self.bridge)
            await self.containerd.start()
            self.endpoint = self.containerd.endpoint
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="containerd supervisor")
        self.channel = grpc.aio.insecure_channel(self.endpoint)
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)
        # After a restart the CRI plugin answers "not initialized" while it recovers its sandboxes.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                version = await self.runtime.Version(pb.VersionRequest(), timeout=10)
                break
            except grpc.aio.AioRpcError as error:
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"the CRI endpoint {self.endpoint} does not answer: {error.details()}") from error
                await asyncio.sleep(0.1)
        self._version = RuntimeVersion(version.runtime_name, version.runtime_version)

    async def _supervise(self) -> None:
        """Restart our containerd when it dies; running pods survive that (their shims stay)."""
        assert self.containerd is not None
        while True:
            process = self.containerd.process
            if process is not None:
                await process.wait()
            await asyncio.sleep(SUPERVISE_SECONDS)
            if self.containerd.process is not process and self.containerd.process is not None:
                continue  # restarted by someone else meanwhile
            log.warning("containerd exited (status %s); restarting it", process.returncode if process else None)
            try:
                await self.containerd.start()
            except Exception as error:  # keep trying: the kubelet is useless without its runtime
                log.error("restarting containerd: %s", error)

    def set_pod_cidr(self, cidr: str) -> None:
        """The node's podCIDR is known: (re)write the CNI config, which containerd reloads by itself."""
        self.pod_cidr = cidr
        if self.containerd is not None:
            self.containerd.pod_cidr = cidr
            self.containerd.write_cni_config()

    async def delete_bridge(self) -> None:
        if self.containerd is None:
            return  # an external runtime owns its network
        process = await asyncio.create_subprocess_exec(
            "ip", "link", "del", self.bridge, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await process.wait()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.containerd is not None:
            # Running pods survive a containerd restart, so stopping it leaves them to be adopted later.
            await self.containerd.stop()

    def version(self) -> RuntimeVersion:
        return self._version

    @property
    def container_id_type(self) -> str:
        """The scheme of `containerID` in pod statuses: the runtime's name, as the kubelet reports it."""
        return self._version.runtime_name or "containerd"

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
        dns = self._dns_config(config)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=config.name, namespace=config.namespace, uid=config.uid, attempt=0),
            hostname=config.hostname or config.name,
            log_directory=config.log_directory,
            dns_config=dns,
            port_mappings=[
                pb.PortMapping(
                    protocol={"UDP": pb.UDP, "SCTP": pb.SCTP}.get(port.get("protocol", "TCP"), pb.TCP),
                    container_port=int(port["containerPort"]),
                    host_port=int(port["hostPort"]),
                    host_ip=port.get("hostIP", ""),
                )
                for port in config.port_mappings
            ],
            labels=config.labels,
            annotations={LOG_DIR_ANNOTATION: config.log_directory, PRIVILEGED_ANNOTATION: str(config.privileged).lower()},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self._cgroup_parent(config.uid),
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespace_option,
                                                                privileged=config.privileged),
            ),
        )

    def _dns_config(self, config: PodSandboxConfig) -> pb.DNSConfig | None:
        """resolv.conf as the kubelet writes it for the pod's dnsPolicy; None keeps the host's."""
        policy = config.dns_policy or "ClusterFirst"
        custom = config.dns_config or {}
        servers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        cluster_first = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not config.host_network)
        if cluster_first and self.dns_servers:
            servers = list(self.dns_servers)
            searches = [f"{config.namespace}.svc.{self.cluster_domain}", f"svc.{self.cluster_domain}", self.cluster_domain]
            options = ["ndots:5"]
        elif policy != "None" and not custom:
            return None  # Default (or no cluster DNS): the host's resolv.conf
        servers += [s for s in custom.get("nameservers") or [] if s not in servers]
        searches += [s for s in custom.get("searches") or [] if s not in searches]
        for option in custom.get("options") or []:
            text = option["name"] + (f":{option['value']}" if option.get("value") is not None else "")
            options = [o for o in options if o.split(":", 1)[0] != option["name"]] + [text]
        return pb.DNSConfig(servers=servers, searches=searches, options=options)

    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str:
        if not self.pod_cidr and self.containerd is not None and not config.host_network:
            raise RuntimeFailure("the node has no pod CIDR yet: set the Node's spec.podCIDR or --pod-cidr",
                                 reason="CreatePodSandboxError")
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
        self._sandbox_networks.pop(sandbox_id, None)
        if status is not None:
            await asyncio.to_thread(remove_cgroup_tree, self._cgroup_parent(status.uid))
            # The node's own parent goes with its last pod (rmdir fails while other pods are in it).
            await asyncio.to_thread(remove_empty_cgroup, self.cgroup_root)

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
        self._sandbox_networks[sandbox_id] = (status.ip, status.host_network)
        return status

    async def list_pod_sandboxes(self) -> list[PodSandboxStatus]:
        reply = await self._call(self._rt.ListPodSandbox, pb.ListPodSandboxRequest())
        result = []
        for sandbox in reply.items:
            network = self._sandbox_networks.get(sandbox.id)
            if network is None:
                # Only ListPodSandbox's items lack the network; a sandbox's IP never changes, so one
                # status call per sandbox ever (the kubelet lists at every new pod: O(pods) calls each).
                status = await self.pod_sandbox_status(sandbox.id)
                if status is not None:
                    result.append(status)
                continue
            status = self._sandbox_status(sandbox, network[0])
            status.host_network = network[1]
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
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self._cgroup_parent(status.metadata.uid),
                security_context=pb.LinuxSandboxSecurityContext(
                    privileged=status.annotations.get(PRIVILEGED_ANNOTATION) == "true"),
            ),
        )
        self._sandbox_configs[sandbox_id] = config
        return config

    # Images

    async def ensure_image(self, image: str, pull_policy: str = "IfNotPresent", docker_configs: list[dict] | None = None) -> str:
        """Make `image` present as `imagePullPolicy` says; returns the image id.

        Raises RuntimeFailure with reason ErrImagePull (pull failed) or ErrImageNeverPull.
        """
        present = await self.image_id(image)
        if present and pull_policy != "Always":
            return present
        if pull_policy == "Never":
            raise RuntimeFailure(f'Container image "{image}" is not present with pull policy of Never', reason="ErrImageNeverPull")
        return await self.pull_image(image, docker_configs)

    async def image_id(self, image: str) -> str | None:
        """The id of `image` when it is present on the node."""
        if self.images is None:
            raise RuntimeFailure("the cri runtime is not started")
        present = await self._call(self.images.ImageStatus, pb.ImageStatusRequest(image=pb.ImageSpec(image=image)),
                                   reason="ErrImagePull")
        return present.image.id or None

    async def pull_image(self, image: str, docker_configs: list[dict] | None = None) -> str:
        """Pull `image` with the first matching credentials; RuntimeFailure(ErrImagePull) on failure."""
        if self.images is None:
            raise RuntimeFailure("the cri runtime is not started")
        spec = pb.ImageSpec(image=image)
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

    async def image_records(self) -> list[dict]:
        """Every image with its id, names and size (for image garbage collection)."""
        if self.images is None:
            return []
        reply = await self._call(self.images.ListImages, pb.ListImagesRequest())
        return [{"id": image.id, "names": list(image.repo_tags) + list(image.repo_digests), "sizeBytes": image.size}
                for image in reply.images]

    async def images_in_use(self) -> set[str]:
        """Ids of the images of every container and sandbox (pause) that exists, running or not."""
        listing = await self._call(self._rt.ListContainers, pb.ListContainersRequest())
        used = {container.image_ref for container in listing.containers}
        if self.containerd is not None:
            pause = await self.image_id(PAUSE_IMAGE)
            if pause:
                used.add(pause)
        return used

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
        security = await self._security_context(config)
        # The CRI log path is relative to the sandbox's log directory; the kubelet hands an absolute one.
        log_path = config.log_path or f"{config.name}/{config.attempt}.log"
        if os.path.isabs(log_path) and sandbox_config.log_directory:
            log_path = os.path.relpath(log_path, sandbox_config.log_directory)
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            sandbox_config=sandbox_config,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=config.name, attempt=config.attempt),
                image=pb.ImageSpec(image=config.image),
                command=list(config.command),
                args=list(config.args),
                working_dir=config.working_dir or "",
                envs=[pb.KeyValue(key=k, value=v) for k, v in config.env.items()],
                mounts=[pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.read_only)
                        for m in config.mounts],
                labels={**config.labels, IMAGE_LABEL: config.image},
                log_path=log_path,
                stdin=config.stdin,
                tty=config.tty,
                linux=pb.LinuxContainerConfig(resources=resources, security_context=security),
            ),
        )
        reply = await self._call(self._rt.CreateContainer, request, reason="CreateContainerError")
        self._container_sandboxes[reply.container_id] = sandbox_id
        return reply.container_id

    async def _security_context(self, config: ContainerConfig) -> pb.LinuxContainerSecurityContext:
        """Kubernetes' securityContext (pod's and container's, merged) as the CRI's Linux one."""
        context = config.security_context or {}
        privileged = bool(context.get("privileged"))
        security = pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD),
            privileged=privileged,
            readonly_rootfs=bool(context.get("readOnlyRootFilesystem")),
            # allowPrivilegeEscalation defaults to true; a privileged container always may escalate.
            no_new_privs=context.get("allowPrivilegeEscalation") is False and not privileged,
            supplemental_groups=[int(g) for g in context.get("supplementalGroups") or []],
        )
        if context.get("fsGroup") is not None:
            security.supplemental_groups.append(int(context["fsGroup"]))
        if context.get("runAsUser") is not None:
            security.run_as_user.value = int(context["runAsUser"])
        if context.get("runAsGroup") is not None:
            security.run_as_group.value = int(context["runAsGroup"])
        capabilities = context.get("capabilities") or {}
        if capabilities:
            security.capabilities.add_capabilities.extend(capabilities.get("add") or [])
            security.capabilities.drop_capabilities.extend(capabilities.get("drop") or [])
        if not privileged:
            security.masked_paths.extend(MASKED_PATHS)
            security.readonly_paths.extend(READONLY_PATHS)
        if context.get("runAsNonRoot"):
            await self._verify_non_root(config, context)
        return security

    async def _verify_non_root(self, config: ContainerConfig, context: dict) -> None:
        """runAsNonRoot: refuse a container that would run as uid 0, with the kubelet's messages."""
        uid: int | None = context.get("runAsUser")
        if uid is None and self.images is not None:
            reply = await self._call(self.images.ImageStatus, pb.ImageStatusRequest(image=pb.ImageSpec(image=config.image)),
                                     reason="CreateContainerConfigError")
            if reply.image.HasField("uid"):
                uid = reply.image.uid.value
            elif reply.image.username:
                raise RuntimeFailure(
                    f"container has runAsNonRoot and image has non-numeric user ({reply.image.username}), "
                    "cannot verify user is non-root", reason="CreateContainerConfigError")
            else:
                uid = 0  # no USER in the image: root
        if uid == 0:
            raise RuntimeFailure(f"container has runAsNonRoot and image will run as root (container: {config.name})",
                                 reason="CreateContainerConfigError")

    async def start_container(self, container_id: str) -> None:
        await self._call(self._rt.StartContainer, pb.StartContainerRequest(container_id=container_id), reason="RunContainerError")

    async def stop_container(self, container_id: str, timeout: float) -> None:
        await self._call(self._rt.StopContainer, pb.StopContainerRequest(container_id=container_id, timeout=int(timeout)),
                         timeout=timeout + 30)

    async def remove_container(self, container_id: str) -> None:
        await self._call(self._rt.RemoveContainer, pb.RemoveContainerRequest(container_id=container_id))
        self._container_sandboxes.pop(container_id, None)

    def _status(self, status: pb.ContainerStatus, sandbox_id: str = "") -> ContainerStatus:
        state = _CONTAINER_STATES.get(status.state, ContainerState.UNKNOWN)
        return ContainerStatus(
            id=status.id,
            sandbox_id=sandbox_id,
            name=status.metadata.name,
            attempt=status.metadata.attempt,
            state=state,
            image=status.labels.get(IMAGE_LABEL) or status.image.image,
            image_ref=status.image_ref,
            created_at=status.created_at / 1e9,
            started_at=status.started_at / 1e9 if status.started_at else None,
            finished_at=status.finished_at / 1e9 if status.finished_at else None,
            exit_code=status.exit_code if state == ContainerState.EXITED else None,
            reason=status.reason,
            message=status.message,
            log_path=status.log_path,
            labels={k: v for k, v in status.labels.items() if k != IMAGE_LABEL},
        )

    async def reopen_container_log(self, container_id: str) -> None:
        """Make the runtime write to a new file at the container's log path (after the kubelet renamed it)."""
        await self._call(self._rt.ReopenContainerLog, pb.ReopenContainerLogRequest(container_id=container_id))

    async def container_status(self, container_id: str) -> ContainerStatus | None:
        try:
            reply = await self._rt.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id), timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise RuntimeFailure(error.details() or str(error.code())) from error
        sandbox_id = self._container_sandboxes.get(container_id)
        if sandbox_id is None:  # a container's sandbox never changes: ask once
            listing = await self._call(self._rt.ListContainers, pb.ListContainersRequest(filter=pb.ContainerFilter(id=container_id)))
            sandbox_id = listing.containers[0].pod_sandbox_id if listing.containers else ""
            if sandbox_id:
                self._container_sandboxes[container_id] = sandbox_id
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
        # containerd 1.6 has no CRI container events. One poller lists every container's state for all
        # waiters: a poll per container would cost the runtime hundreds of calls a second at 100 pods.
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(container_id, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_exits(), name="cri exit poller")
        try:
            await waiter
        finally:
            waiters = self._waiters.get(container_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(container_id, None)

    async def _poll_exits(self) -> None:
        while self._waiters:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            try:
                listing = await self._rt.ListContainers(pb.ListContainersRequest(), timeout=30)
            except grpc.aio.AioRpcError:
                continue  # containerd restarting: the containers are still there, ask again
            running = {c.id for c in listing.containers if c.state == pb.CONTAINER_RUNNING}
            for container_id, waiters in list(self._waiters.items()):
                if container_id not in running:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)

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


def remove_empty_cgroup(path: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(OSError):
            (hierarchy / path.strip("/")).rmdir()


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


async def remove_cri_node(data_dir: str, bridge: str, cgroup_root: str) -> None:
    """Remove what a cri node left on this machine after its agent is gone: every pod (through its own
    containerd, started again for this), then containerd, the bridge and the node's cgroups."""
    runtime = CriRuntime(data_dir=data_dir, pod_cidr=None, bridge=bridge, cgroup_root=cgroup_root)
    await runtime.start()
    try:
        for sandbox in await runtime.list_pod_sandboxes():
            with contextlib.suppress(RuntimeFailure):
                await runtime.stop_pod_sandbox(sandbox.id)
                await runtime.remove_pod_sandbox(sandbox.id)
    finally:
        await runtime.close()
        await runtime.delete_bridge()
        await asyncio.to_thread(remove_cgroup_tree, runtime.cgroup_root)
