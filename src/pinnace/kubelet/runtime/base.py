"""The `Runtime` protocol: the seam between the kubelet and a container engine.

Shaped like the Kubernetes CRI (`RuntimeService`): a pod sandbox owns the pod's network; containers
are created inside a sandbox, started, stopped and removed; the kubelet asks for status and lists and
never keeps state that the runtime already holds. Every engine (`process`, later `cri`) implements
this protocol, so the pod workers never know which one they drive.

Differences from the CRI, on purpose: exec and port-forward return local streams (an asyncio process
or a connected socket pair) instead of a URL to a separate streaming server, because the kubelet's
own HTTP server is the streaming server.

Optional members, which the kubelet looks for with `getattr`: `container_id_type` (the scheme of
`containerID` in pod statuses, the CRI runtime's name as in `containerd://<id>`; default `pinnace`)
and `reopen_container_log(container_id)` (CRI ReopenContainerLog: the kubelet then rotates container
log files itself, see kubelet/container_log_manager.py).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class SandboxState(enum.StrEnum):
    READY = "SANDBOX_READY"
    NOTREADY = "SANDBOX_NOTREADY"


class ContainerState(enum.StrEnum):
    CREATED = "CONTAINER_CREATED"
    RUNNING = "CONTAINER_RUNNING"
    EXITED = "CONTAINER_EXITED"
    UNKNOWN = "CONTAINER_UNKNOWN"


class RuntimeFailure(Exception):
    """A runtime operation failed; `reason` is what the kubelet reports as a waiting reason."""

    def __init__(self, message: str, reason: str = "RunContainerError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class PodSandboxConfig:
    name: str
    namespace: str
    uid: str
    hostname: str = ""
    host_network: bool = False
    log_directory: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    privileged: bool = False  # some container of the pod is privileged (runtimes with real isolation)
    dns_policy: str = "ClusterFirst"
    dns_config: dict | None = None  # the pod's spec.dnsConfig
    port_mappings: list[dict] = field(default_factory=list)  # container ports with a hostPort, as in the pod spec


@dataclass
class PodSandboxStatus:
    id: str
    name: str
    namespace: str
    uid: str
    state: SandboxState
    created_at: float
    ip: str | None = None
    netns: str | None = None  # name under /var/run/netns, None in the host network
    host_network: bool = False


@dataclass
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False
    volume: str = ""  # the pod volume's name, for runtimes that expose volumes by name


@dataclass
class ContainerConfig:
    name: str
    command: list[str]
    image: str = ""
    # Runtimes with images: `command` replaces the image's ENTRYPOINT and `args` its CMD, as in
    # Kubernetes. The process runtime has no image and runs `command` followed by `args`.
    args: list[str] = field(default_factory=list)
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    log_path: str = ""
    attempt: int = 0
    memory_limit_bytes: int | None = None
    cpu_limit_millis: int | None = None
    cpu_request_millis: int | None = None
    stdin: bool = False
    tty: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    security_context: dict | None = None  # the pod's and the container's securityContext, merged


@dataclass
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: ContainerState
    image: str = ""
    # The image the container runs, as the CRI's `image_ref`: its repo digest (`name@sha256:...`), else
    # its id (`sha256:...`). Pod statuses report it as `imageID`; empty for runtimes without images.
    image_ref: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    pid: int | None = None
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RuntimeVersion:
    runtime_name: str
    runtime_version: str


@runtime_checkable
class Runtime(Protocol):
    """A container engine. All methods are coroutines; none may block the event loop."""

    async def start(self) -> None:
        """Prepare the engine (node bridge, state recovery after a kubelet restart)."""

    async def close(self) -> None:
        """Release the engine's own resources; running containers keep running."""

    def version(self) -> RuntimeVersion: ...

    # Pod sandboxes
    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str: ...
    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus | None: ...
    async def list_pod_sandboxes(self) -> list[PodSandboxStatus]: ...

    # Containers
    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str: ...
    async def start_container(self, container_id: str) -> None: ...
    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL; returns once the container exited."""

    async def remove_container(self, container_id: str) -> None: ...
    async def container_status(self, container_id: str) -> ContainerStatus | None: ...
    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]: ...
    async def wait_container(self, container_id: str) -> None:
        """Return once the container is no longer running."""

    # Streaming
    async def exec(
        self, container_id: str, command: list[str], *, stdin: bool, tty: bool
    ) -> asyncio.subprocess.Process: ...
    async def port_forward(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    # Statistics
    async def container_stats(self, container_id: str) -> dict: ...
