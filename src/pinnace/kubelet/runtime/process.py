"""The `process` runtime: a container is a host process; `image` is only recorded.

What isolation a pod gets:
- As root, each pod sandbox is a network namespace joined to the node bridge by a veth pair, with an
  address from the node's pod CIDR (host-local allocation persisted under the data dir). Every
  container process enters that namespace before exec, so the pod's containers share one IP and
  localhost, and pods reach each other by IP. Without root (or with `network=False`) pods use the host
  network; the kubelet warns about it.
- As root, each container gets a private mount namespace in which its volumes are bind-mounted at
  their `mountPath` (a missing mount point is created, empty, on the host and removed again with the
  container). Without root nothing is mounted; the container finds each volume's directory in the
  environment variable `PINNACE_VOLUME_<VOLUME NAME>` (upper case, `-` and `.` as `_`).
- As root, memory and cpu limits are cgroup v1 limits (`memory.limit_in_bytes`,
  `cpu.cfs_quota_us`); an OOM kill is reported as `OOMKilled`.
- There is no PID, user, UTS or filesystem isolation: the process sees the host's filesystem and runs
  as the kubelet's user. Hence the termination message file is given to the container in
  `PINNACE_TERMINATION_MESSAGE_PATH` (and, as root, also bind-mounted at `terminationMessagePath`
  unless that lies under /dev), and /etc/resolv.conf and /etc/hosts are the host's unless the kubelet
  has cluster DNS configured (then, as root, per-pod files are bind-mounted over them).

Output: stdout and stderr are FIFOs under the data dir. The container holds its FIFOs open for both
reading and writing, so a kubelet restart never gives it SIGPIPE (output waits in the pipe, up to the
pipe buffer, until the new kubelet reads it again). The kubelet turns the bytes into CRI log lines.

State (sandboxes, containers, pids with their start times) is persisted as JSON under
`<data_dir>/runtime`, so a restarted kubelet finds its running containers again. The exit code of a
container that exited while no kubelet was watching cannot be known; it is reported as 255 with
reason `Unknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import pty
import random
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import psutil

from pinnace.kubelet.network.bridge import BridgeNetwork, netns_exists, remove_netns
from pinnace.kubelet.network.ipam import HostLocalIpam
from pinnace.kubelet.runtime.base import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    Mount,
    PodSandboxConfig,
    PodSandboxStatus,
    RuntimeFailure,
    RuntimeVersion,
    SandboxState,
)
from pinnace.kubelet.runtime.crilog import CriLogWriter, LogPumpProtocol

log = logging.getLogger(__name__)

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

CGROUP_ROOT = "/sys/fs/cgroup"


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def new_id() -> str:
    """A unique 32-hex-digit id: time plus a pseudo-random part (os.urandom is slow on some VMs)."""
    return f"{random.getrandbits(64):016x}{time.time_ns() & (2**64 - 1):016x}"


def volume_env_name(volume: str) -> str:
    return "PINNACE_VOLUME_" + volume.upper().replace("-", "_").replace(".", "_")


class _PtyReader(asyncio.Protocol):
    """Reads a pty master into a StreamReader; EIO (the other side closed) is the end of the stream."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def data_received(self, data: bytes) -> None:
        self.reader.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.feed_eof()


class _PtyWriter:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, data)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.write(b"\x04")  # end of input on a terminal is ^D, not a closed pipe


class TtyProcess:
    """An exec'd process on a pseudo-terminal, shaped like asyncio's Process for the streaming code."""

    def __init__(self, process: asyncio.subprocess.Process, master: int, reader: asyncio.StreamReader) -> None:
        self.process = process
        self.master = master
        self.stdin = _PtyWriter(master)
        self.stdout = reader
        self.stderr = None

    @classmethod
    async def attach(cls, process: asyncio.subprocess.Process, master: int) -> TtyProcess:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: _PtyReader(reader), os.fdopen(os.dup(master), "rb", buffering=0))
        return cls(process, master, reader)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)
        return code

    def kill(self) -> None:
        self.process.kill()

    async def communicate(self) -> tuple[bytes, None]:
        output = await self.stdout.read()
        await self.wait()
        return output, None


class _Spawner:
    """Starts container processes from one dedicated thread, with vfork instead of fork.

    A fork with a preexec hook copies the whole kubelet's page tables (10-30 ms, holding the event
    loop); vfork is about 0.1 ms but allows no code in the child. Namespaces and cgroups are inherited
    from the forking *thread*, so this thread joins the pod's network namespace (setns is per thread)
    and the container's cgroups (cgroup v1 `tasks` moves one thread), makes the container's private
    mount namespace with its bind mounts, spawns, and goes home again.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pinnace-spawn")
        self.host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.host_mntns: int | None = None
        self.home: dict[str, str] = {}  # controller -> the spawner thread's own cgroup directory
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                for controller in controllers.split(","):
                    if controller in ("memory", "cpu"):
                        self.home[controller] = os.path.join(CGROUP_ROOT, controller, path.lstrip("/"))
        except OSError:
            pass

    @staticmethod
    def _join(directory: str, tid: int) -> None:
        with open(os.path.join(directory, "tasks"), "w") as tasks:
            tasks.write(str(tid))

    def _enter_private_mounts(self, mounts: list[Mount]) -> None:
        """Put this thread in a fresh private mount namespace with the container's bind mounts."""
        if self.host_mntns is None:
            # setns/unshare of a mount namespace needs a thread that shares no filesystem context.
            _check(_libc.unshare(CLONE_FS), "unshare CLONE_FS")
            self.host_mntns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        _check(_libc.unshare(CLONE_NEWNS), "unshare CLONE_NEWNS")
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount private")
        for mount in mounts:
            source, target = mount.host_path.encode(), mount.container_path.encode()
            _check(_libc.mount(source, target, None, MS_BIND | MS_REC, None), f"bind {mount.container_path}")
            if mount.read_only:
                flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC
                _check(_libc.mount(source, target, None, flags, None), f"read-only {mount.container_path}")

    def spawn(
        self, argv: list[str], netns_fd: int | None, cgroups: list[str], cwd: str | None, kwargs: dict,
        mounts: list[Mount] | None = None,
    ) -> subprocess.Popen:
        tid = threading.get_native_id()
        moved: list[str] = []
        in_private_mounts = False
        try:
            if netns_fd is not None:  # only root can setns; unprivileged pods stay in the host network
                _check(_libc.setns(netns_fd, CLONE_NEWNET), "setns")
            for directory in cgroups:
                self._join(directory, tid)
                moved.append(directory)
            if mounts:
                in_private_mounts = True
                self._enter_private_mounts(mounts)
            return subprocess.Popen(argv, cwd=cwd, **kwargs)
        finally:
            if in_private_mounts and self.host_mntns is not None:
                # The namespace lives on in the child; this thread goes back to the host's.
                _check(_libc.setns(self.host_mntns, CLONE_NEWNS), "setns back to the host mounts")
            for directory in moved:
                controller = directory[len(CGROUP_ROOT) + 1 :].split("/", 1)[0]
                home = self.home.get(controller)
                try:
                    if home is None:
                        raise OSError(f"no home cgroup for {controller}")
                    self._join(home, tid)
                except OSError as error:
                    log.error("the spawner thread could not leave cgroup %s: %s", directory, error)
            if netns_fd is not None:
                _check(_libc.setns(self.host_netns, CLONE_NEWNET), "setns back to the host network")


class _Container:
    """In-memory companion of a container record: its process and log pumps."""

    def __init__(self, record: dict) -> None:
        self.record = record
        self.popen: subprocess.Popen | None = None
        self.exited = asyncio.Event()
        self.pumps: list[asyncio.Future[None]] = []
        self.writer: CriLogWriter | None = None
        self.transports: list[asyncio.BaseTransport] = []
        self.pidfd: int | None = None


class ProcessRuntime:
    """Containers as host processes; see the module docstring for what is isolated and how."""

    name = "process"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        pod_cidr: str | None = None,
        bridge: str = "pinnace0",
        network: bool | None = None,
        cgroups: bool | None = None,
        mount_namespaces: bool | None = None,
        cgroup_parent: str = "pinnace",
    ) -> None:
        is_root = os.geteuid() == 0
        self.root_dir = Path(data_dir) / "runtime"
        self.bridge = bridge
        self.network_enabled = is_root if network is None else network
        self.cgroups_enabled = is_root if cgroups is None else cgroups
        self.mount_namespaces = is_root if mount_namespaces is None else mount_namespaces
        self.cgroup_parent = cgroup_parent
        self.pod_cidr: str | None = None
        self.ipam: HostLocalIpam | None = None
        self.net: BridgeNetwork | None = None
        self._sandboxes: dict[str, dict] = {}
        self._containers: dict[str, _Container] = {}
        self._spawner = _Spawner()
        for sub in ("sandboxes", "containers", "fifos"):
            (self.root_dir / sub).mkdir(parents=True, exist_ok=True)
        if pod_cidr:
            self.set_pod_cidr(pod_cidr)

    # ----------------------------------------------------------------- setup

    def set_pod_cidr(self, cidr: str) -> None:
        if self.pod_cidr == cidr:
            return
        self.pod_cidr = cidr
        self.ipam = HostLocalIpam(self.root_dir / "ipam", cidr)
        self.net = BridgeNetwork(self.bridge, self.ipam.gateway, self.ipam.prefixlen)
        self._bridge_ready = False

    @property
    def isolated_network(self) -> bool:
        """True when pods get their own network namespace (root and a pod CIDR)."""
        return self.network_enabled and self.ipam is not None

    def version(self) -> RuntimeVersion:
        return RuntimeVersion("pinnace-process", "0.1.0")

    async def start(self) -> None:
        """Load persisted state; re-attach to containers that are still running."""
        loop = asyncio.get_running_loop()
        for path in (self.root_dir / "sandboxes").glob("*.json"):
            record = json.loads(path.read_text())
            self._sandboxes[record["id"]] = record
        for path in (self.root_dir / "containers").glob("*.json"):
            record = json.loads(path.read_text())
            container = _Container(record)
            self._containers[record["id"]] = container
            if record["state"] == ContainerState.RUNNING:
                if self._same_process(record):
                    self._attach_logs(container, loop)
                    self._watch_foreign(container, loop)
                else:
                    record.update(
                        state=ContainerState.EXITED,
                        exit_code=255,
                        reason="Unknown",
                        message="the container exited while the node agent was not watching it",
                        finished_at=time.time(),
                    )
                    container.exited.set()
                    self._save_container(record)
            else:
                container.exited.set()

    async def close(self) -> None:
        for container in self._containers.values():
            for transport in container.transports:
                transport.close()
            if container.pidfd is not None:
                with contextlib.suppress(ValueError, OSError):
                    asyncio.get_running_loop().remove_reader(container.pidfd)
                os.close(container.pidfd)
                container.pidfd = None
            if container.writer:
                container.writer.close()

    async def _ensure_bridge(self) -> None:
        if self.net is not None and not self._bridge_ready:
            await asyncio.to_thread(self.net.ensure_bridge)
            self._bridge_ready = True

    async def delete_bridge(self) -> None:
        """Remove the node bridge (only for tests and `pinnace down`)."""
        if self.net is not None:
            await asyncio.to_thread(self.net.delete_bridge)

    # ----------------------------------------------------------------- state

    def _save_sandbox(self, record: dict) -> None:
        self._write_json(self.root_dir / "sandboxes" / f"{record['id']}.json", record)

    def _save_container(self, record: dict) -> None:
        self._write_json(self.root_dir / "containers" / f"{record['id']}.json", record)

    @staticmethod
    def _write_json(path: Path, record: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    @staticmethod
    def _same_process(record: dict) -> bool:
        pid = record.get("pid")
        if not pid:
            return False
        try:
            process = psutil.Process(pid)
            return abs(process.create_time() - record.get("pid_start", 0)) < 1.0 and process.status() != "zombie"
        except psutil.Error:
            return False

    # ----------------------------------------------------------------- sandboxes

    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str:
        sandbox_id = new_id()[:16]
        record = {
            "id": sandbox_id,
            "name": config.name,
            "namespace": config.namespace,
            "uid": config.uid,
            "state": SandboxState.READY,
            "created_at": time.time(),
            "host_network": config.host_network or not self.isolated_network,
            "ip": None,
            "netns": None,
            "log_directory": config.log_directory,
            "labels": config.labels,
        }
        if not record["host_network"]:
            assert self.ipam is not None and self.net is not None
            netns_name = "pn-" + sandbox_id
            address = self.ipam.allocate(sandbox_id)
            record.update(ip=address, netns=netns_name, state=SandboxState.NOTREADY)
            # Recorded before anything is created, so a crash or a cancellation leaves a record to clean.
            self._sandboxes[sandbox_id] = record
            self._save_sandbox(record)
            try:
                await self._ensure_bridge()
                await asyncio.to_thread(self.net.setup_pod, netns_name, sandbox_id, address)
            except Exception as error:
                await self._teardown_network(record)
                self.ipam.release(sandbox_id)
                self._sandboxes.pop(sandbox_id, None)
                (self.root_dir / "sandboxes" / f"{sandbox_id}.json").unlink(missing_ok=True)
                raise RuntimeFailure(f"setting up the pod network failed: {error}", "CreatePodSandboxError") from error
            record["state"] = SandboxState.READY
        self._sandboxes[sandbox_id] = record
        self._save_sandbox(record)
        return sandbox_id

    async def _teardown_network(self, record: dict) -> None:
        if record.get("netns") and self.net is not None:
            await asyncio.to_thread(self.net.teardown_pod, record["netns"], record["id"])
        elif record.get("netns") and netns_exists(record["netns"]):
            await asyncio.to_thread(remove_netns, record["netns"])

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        record = self._sandboxes.get(sandbox_id)
        if record is None:
            return
        for container in list(self._containers.values()):
            if container.record["sandbox_id"] == sandbox_id:
                await self.stop_container(container.record["id"], 0)
        if record["state"] != SandboxState.NOTREADY or (record.get("netns") and netns_exists(record["netns"])):
            await self._teardown_network(record)
            # The address goes back to the pool now: a finished pod may linger for a long time.
            if self.ipam is not None:
                self.ipam.release(sandbox_id)
            record["state"] = SandboxState.NOTREADY
            self._save_sandbox(record)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        record = self._sandboxes.get(sandbox_id)
        if record is None:
            return
        await self.stop_pod_sandbox(sandbox_id)
        for container in list(self._containers.values()):
            if container.record["sandbox_id"] == sandbox_id:
                await self.remove_container(container.record["id"])
        if self.ipam is not None:
            self.ipam.release(sandbox_id)
        self._sandboxes.pop(sandbox_id, None)
        (self.root_dir / "sandboxes" / f"{sandbox_id}.json").unlink(missing_ok=True)

    def _sandbox_status(self, record: dict) -> PodSandboxStatus:
        return PodSandboxStatus(
            id=record["id"],
            name=record["name"],
            namespace=record["namespace"],
            uid=record["uid"],
            state=SandboxState(record["state"]),
            created_at=record["created_at"],
            ip=record.get("ip"),
            netns=record.get("netns"),
            host_network=record.get("host_network", True),
        )

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus | None:
        record = self._sandboxes.get(sandbox_id)
        return self._sandbox_status(record) if record else None

    async def list_pod_sandboxes(self) -> list[PodSandboxStatus]:
        return [self._sandbox_status(record) for record in self._sandboxes.values()]

    # ----------------------------------------------------------------- containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        if sandbox_id not in self._sandboxes:
            raise RuntimeFailure(f"pod sandbox {sandbox_id} not found", "CreateContainerError")
        if not config.command:
            raise RuntimeFailure(
                "the process runtime runs no images: the container must set `command`",
                "CreateContainerConfigError",
            )
        container_id = new_id()
        record = {
            "id": container_id,
            "sandbox_id": sandbox_id,
            "name": config.name,
            "attempt": config.attempt,
            "image": config.image,
            "command": config.command,
            "working_dir": config.working_dir,
            "env": config.env,
            "mounts": [vars(mount) for mount in config.mounts],
            "log_path": config.log_path,
            "memory_limit_bytes": config.memory_limit_bytes,
            "cpu_limit_millis": config.cpu_limit_millis,
            "cpu_request_millis": config.cpu_request_millis,
            "labels": config.labels,
            "state": ContainerState.CREATED,
            "created_at": time.time(),
            "started_at": None,
            "finished_at": None,
            "exit_code": None,
            "reason": "",
            "message": "",
            "pid": None,
            "pid_start": None,
            "cgroups": [],
            "created_dirs": [],
        }
        self._containers[container_id] = _Container(record)
        self._save_container(record)
        return container_id

    def _make_cgroups(self, record: dict) -> list[str]:
        """Create the container's cgroups with its limits; returns the cgroup.procs files to join."""
        if not self.cgroups_enabled:
            return []
        procs: list[str] = []
        memory = record.get("memory_limit_bytes")
        cpu_limit = record.get("cpu_limit_millis")
        cpu_request = record.get("cpu_request_millis")
        for controller in ("memory", "cpu"):
            path = os.path.join(CGROUP_ROOT, controller, self.cgroup_parent, record["id"])
            try:
                os.makedirs(path, exist_ok=True)
                if controller == "memory" and memory:
                    Path(path, "memory.limit_in_bytes").write_text(str(memory))
                    with contextlib.suppress(OSError):  # no swap accounting on some kernels
                        Path(path, "memory.memsw.limit_in_bytes").write_text(str(memory))
                if controller == "cpu":
                    if cpu_limit:
                        Path(path, "cpu.cfs_period_us").write_text("100000")
                        Path(path, "cpu.cfs_quota_us").write_text(str(max(cpu_limit * 100, 1000)))
                    if cpu_request:
                        Path(path, "cpu.shares").write_text(str(max(cpu_request * 1024 // 1000, 2)))
            except OSError as error:
                log.warning("cgroup %s for container %s: %s", controller, record["name"], error)
                continue
            record["cgroups"].append(path)
            procs.append(os.path.join(path, "cgroup.procs"))
        return procs

    def _prepare_mounts(self, record: dict) -> list[Mount]:
        if not self.mount_namespaces:
            return []
        mounts = [Mount(**mount) for mount in record["mounts"]]
        for mount in mounts:
            target = mount.container_path
            if os.path.exists(target):
                continue
            # Create the missing mount point (a file for a file volume, else a directory); remember
            # what we created so removal leaves the host as it was.
            parent = target
            missing = []
            while not os.path.exists(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            if os.path.isdir(mount.host_path):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                Path(target).touch()
            record["created_dirs"].extend(missing)
        return mounts

    def _hand_over_mount_point(self, container_id: str, path: str) -> bool:
        """Leave a created mount point to another container that mounts at or under it.

        Removing it would be wrong, not just untidy: since Linux 3.18 removing a directory detaches
        whatever other mount namespaces have mounted on it, so every pod's service account token
        (all at the same mountPath) would vanish when the first pod that made the path went away."""
        prefix = path.rstrip("/") + "/"
        for other_id, other in self._containers.items():
            if other_id == container_id:
                continue
            targets = [mount["container_path"] for mount in other.record.get("mounts", [])]
            if any(target == path or target.startswith(prefix) for target in targets):
                other.record.setdefault("created_dirs", []).append(path)
                self._save_container(other.record)
                return True
        return False

    def _open_fifos(self, container_id: str) -> tuple[list[int], list[int]]:
        """Parent read ends and child ends of the stdout and stderr FIFOs."""
        readers, children = [], []
        for stream in ("out", "err"):
            path = self.root_dir / "fifos" / f"{container_id}.{stream}"
            if not path.exists():
                os.mkfifo(path, 0o600)
            readers.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            children.append(os.open(path, os.O_RDWR))
        return readers, children

    def _attach_logs(self, container: _Container, loop: asyncio.AbstractEventLoop, readers: list[int] | None = None) -> None:
        record = container.record
        if readers is None:
            readers = [
                os.open(self.root_dir / "fifos" / f"{record['id']}.{stream}", os.O_RDONLY | os.O_NONBLOCK)
                for stream in ("out", "err")
            ]
        container.writer = CriLogWriter(record["log_path"])
        for fd, stream in zip(readers, ("stdout", "stderr"), strict=True):
            done: asyncio.Future[None] = loop.create_future()
            container.pumps.append(done)
            pipe = os.fdopen(fd, "rb", buffering=0)

            async def connect(pipe=pipe, stream=stream, done=done) -> None:
                transport, _ = await loop.connect_read_pipe(
                    lambda: LogPumpProtocol(container.writer, stream, done), pipe  # type: ignore[arg-type]
                )
                container.transports.append(transport)

            loop.create_task(connect())

    async def start_container(self, container_id: str) -> None:
        container = self._containers.get(container_id)
        if container is None:
            raise RuntimeFailure(f"container {container_id} not found")
        record = container.record
        if record["state"] != ContainerState.CREATED:
            raise RuntimeFailure(f"container {record['name']} is not in state created")
        sandbox = self._sandboxes[record["sandbox_id"]]
        loop = asyncio.get_running_loop()
        cgroup_procs = self._make_cgroups(record)
        mounts = self._prepare_mounts(record)
        netns_fd = None
        if sandbox.get("netns"):
            try:
                netns_fd = os.open(f"/var/run/netns/{sandbox['netns']}", os.O_RDONLY)
            except OSError as error:
                raise RuntimeFailure(f"the pod network namespace is gone: {error}") from error
        readers, children = self._open_fifos(container_id)
        env = dict(record["env"])
        if not self.mount_namespaces:
            for mount in record["mounts"]:
                env.setdefault(volume_env_name(mount.get("volume", "") or os.path.basename(mount["host_path"])), mount["host_path"])
        cwd = record["working_dir"] or None
        if cwd and not os.path.isdir(cwd) and not mounts:
            cwd = None

        popen_args = {
            "stdin": subprocess.DEVNULL,
            "stdout": children[0],
            "stderr": children[1],
            "env": env,
            "start_new_session": True,
            "close_fds": True,
        }
        try:
            dirs = [os.path.dirname(procs) for procs in cgroup_procs]
            popen = await loop.run_in_executor(
                self._spawner.executor, self._spawner.spawn, record["command"], netns_fd, dirs, cwd, popen_args, mounts
            )
        except (OSError, subprocess.SubprocessError) as error:
            for fd in readers:
                os.close(fd)
            record.update(
                state=ContainerState.EXITED,
                exit_code=128,
                reason="StartError",
                message=str(error),
                finished_at=time.time(),
                started_at=time.time(),
            )
            self._save_container(record)
            container.exited.set()
            self._remove_cgroups(record)
            raise RuntimeFailure(f"starting {record['command'][0]!r} failed: {error}", "RunContainerError") from error
        finally:
            for fd in children:
                os.close(fd)
            if netns_fd is not None:
                os.close(netns_fd)
        container.popen = popen
        try:
            pid_start = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            pid_start = time.time()
        record.update(state=ContainerState.RUNNING, pid=popen.pid, pid_start=pid_start, started_at=time.time())
        self._save_container(record)
        self._attach_logs(container, loop, readers)
        pidfd = os.pidfd_open(popen.pid)
        container.pidfd = pidfd
        loop.add_reader(pidfd, self._on_exit, container)

    def _watch_foreign(self, container: _Container, loop: asyncio.AbstractEventLoop) -> None:
        """Watch a container started by an earlier kubelet: not our child, so only a pidfd tells us."""
        try:
            pidfd = os.pidfd_open(container.record["pid"])
        except OSError:
            self._finish(container, 255, "Unknown")
            return
        container.pidfd = pidfd
        loop.add_reader(pidfd, self._on_exit, container)

    def _on_exit(self, container: _Container) -> None:
        loop = asyncio.get_running_loop()
        if container.pidfd is not None:
            loop.remove_reader(container.pidfd)
            os.close(container.pidfd)
            container.pidfd = None
        if container.popen is not None:
            returncode = container.popen.poll()
            if returncode is None:  # pidfd readable means exited; reap synchronously
                returncode = container.popen.wait()
            code = 128 - returncode if returncode < 0 else returncode
            self._finish(container, code, None)
        else:
            self._finish(container, 255, "Unknown")

    def _finish(self, container: _Container, exit_code: int, reason: str | None) -> None:
        record = container.record
        if record["state"] == ContainerState.EXITED:
            return
        # Like a PID namespace ending with its init: the rest of the container's processes go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record["pid"], signal.SIGKILL)
        self._kill_cgroup(record)
        if reason is None:
            if self._oom_killed(record) and exit_code == 137:
                reason = "OOMKilled"
            else:
                reason = "Completed" if exit_code == 0 else "Error"
        message = ""
        if reason == "Unknown":
            message = "the container exited while the node agent was not watching it"
        record.update(
            state=ContainerState.EXITED, exit_code=exit_code, reason=reason, message=message, finished_at=time.time()
        )
        self._save_container(record)
        container.exited.set()

    def _oom_killed(self, record: dict) -> bool:
        for path in record.get("cgroups", []):
            if "/memory/" not in path:
                continue
            try:
                for line in Path(path, "memory.oom_control").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
                if int(Path(path, "memory.failcnt").read_text()) > 0:
                    return True
            except (OSError, ValueError):
                continue
        return False

    def _kill_cgroup(self, record: dict) -> None:
        for path in record.get("cgroups", []):
            try:
                pids = Path(path, "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)

    def _remove_cgroups(self, record: dict) -> None:
        for path in record.get("cgroups", []):
            for _ in range(20):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        break
                    self._kill_cgroup(record)
                    time.sleep(0.01)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        container = self._containers.get(container_id)
        if container is None:
            return
        record = container.record
        if record["state"] == ContainerState.CREATED:
            record.update(state=ContainerState.EXITED, exit_code=0, reason="Completed", finished_at=time.time())
            self._save_container(record)
            container.exited.set()
            return
        if record["state"] != ContainerState.RUNNING:
            return
        if timeout > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(container.exited.wait(), timeout)
        if not container.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record["pid"], signal.SIGKILL)
            self._kill_cgroup(record)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(container.exited.wait(), 5)
            if not container.exited.is_set():
                self._finish(container, 137, None)

    async def wait_container(self, container_id: str) -> None:
        container = self._containers.get(container_id)
        if container is not None:
            await container.exited.wait()

    async def remove_container(self, container_id: str) -> None:
        container = self._containers.get(container_id)
        if container is None:
            return
        await self.stop_container(container_id, 0)
        if container.pumps:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*container.pumps), 1)
        for transport in container.transports:
            transport.close()
        if container.writer:
            container.writer.close()
        record = container.record
        self._remove_cgroups(record)
        for path in record.get("created_dirs", []):
            if self._hand_over_mount_point(container_id, path):
                continue
            with contextlib.suppress(OSError):
                if os.path.isdir(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
        for stream in ("out", "err"):
            (self.root_dir / "fifos" / f"{container_id}.{stream}").unlink(missing_ok=True)
        (self.root_dir / "containers" / f"{container_id}.json").unlink(missing_ok=True)
        self._containers.pop(container_id, None)

    def _container_status(self, record: dict) -> ContainerStatus:
        return ContainerStatus(
            id=record["id"],
            sandbox_id=record["sandbox_id"],
            name=record["name"],
            attempt=record["attempt"],
            state=ContainerState(record["state"]),
            image=record.get("image", ""),
            created_at=record["created_at"],
            started_at=record.get("started_at"),
            finished_at=record.get("finished_at"),
            exit_code=record.get("exit_code"),
            reason=record.get("reason", ""),
            message=record.get("message", ""),
            pid=record.get("pid"),
            log_path=record.get("log_path", ""),
            labels=record.get("labels", {}),
        )

    async def container_status(self, container_id: str) -> ContainerStatus | None:
        container = self._containers.get(container_id)
        return self._container_status(container.record) if container else None

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        return [
            self._container_status(c.record)
            for c in self._containers.values()
            if sandbox_id is None or c.record["sandbox_id"] == sandbox_id
        ]

    def container_env(self, container_id: str) -> dict[str, str]:
        container = self._containers.get(container_id)
        return dict(container.record["env"]) if container else {}

    # ----------------------------------------------------------------- streaming

    async def exec(
        self, container_id: str, command: list[str], *, stdin: bool, tty: bool
    ) -> asyncio.subprocess.Process:
        """Run `command` beside the container: its network and mount namespaces, env, cgroups and cwd."""
        container = self._containers.get(container_id)
        if container is None or container.record["state"] != ContainerState.RUNNING:
            raise RuntimeFailure("container is not running")
        record = container.record
        pid = record["pid"]
        namespaces: list[tuple[int, int]] = []
        sandbox = self._sandboxes.get(record["sandbox_id"], {})
        if sandbox.get("netns"):
            namespaces.append((os.open(f"/proc/{pid}/ns/net", os.O_RDONLY), CLONE_NEWNET))
        if self.mount_namespaces and record["mounts"]:
            namespaces.append((os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY), CLONE_NEWNS))
        cgroup_procs = [os.path.join(path, "cgroup.procs") for path in record.get("cgroups", [])]
        cwd = record["working_dir"] or None

        def preexec() -> None:
            for fd, kind in namespaces:
                _check(_libc.setns(fd, kind), "setns")
            for procs in cgroup_procs:
                with contextlib.suppress(OSError):
                    fd = os.open(procs, os.O_WRONLY)
                    os.write(fd, b"0")
                    os.close(fd)
            if cwd:
                with contextlib.suppress(OSError):
                    os.chdir(cwd)
            if tty:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes the session's controlling terminal

        if tty:
            master, slave = pty.openpty()
            try:
                process = await asyncio.create_subprocess_exec(
                    *command, stdin=slave, stdout=slave, stderr=slave, env={"TERM": "xterm", **record["env"]},
                    preexec_fn=preexec, start_new_session=True,
                )
            except OSError as error:
                os.close(master)
                raise RuntimeFailure(f"exec {command[0]!r}: {error}", "ExecError") from error
            finally:
                os.close(slave)
                for fd, _ in namespaces:
                    os.close(fd)
            return await TtyProcess.attach(process, master)  # type: ignore[return-value]
        try:
            return await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if tty else asyncio.subprocess.PIPE,
                env=dict(record["env"]),
                preexec_fn=preexec,
                start_new_session=True,
            )
        except OSError as error:
            raise RuntimeFailure(f"exec {command[0]!r}: {error}", "ExecError") from error
        finally:
            for fd, _ in namespaces:
                os.close(fd)

    async def port_forward(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to localhost:`port` inside the pod's network namespace, as the CRI's PortForward does."""
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise RuntimeFailure("pod sandbox not found")
        if not sandbox.get("netns"):
            return await asyncio.open_connection("127.0.0.1", port)
        netns_name = sandbox["netns"]

        def make_socket() -> socket.socket:
            # setns affects only the calling thread: create the socket inside the pod's namespace,
            # then return the thread to the host namespace. The socket stays in the pod's.
            host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(f"/var/run/netns/{netns_name}", os.O_RDONLY)
            try:
                _check(_libc.setns(target, CLONE_NEWNET), "setns")
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                finally:
                    _check(_libc.setns(host, CLONE_NEWNET), "setns back")
            finally:
                os.close(host)
                os.close(target)
            sock.setblocking(False)
            return sock

        sock = await asyncio.to_thread(make_socket)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    # ----------------------------------------------------------------- statistics

    async def container_stats(self, container_id: str) -> dict:
        container = self._containers.get(container_id)
        if container is None or container.record["state"] != ContainerState.RUNNING:
            return {}
        record = container.record
        for path in record.get("cgroups", []):
            if "/memory/" in path:
                with contextlib.suppress(OSError, ValueError):
                    memory = int(Path(path, "memory.usage_in_bytes").read_text())
                    break
        else:
            memory = None
        cpu_seconds = 0.0
        rss = 0
        try:
            root = psutil.Process(record["pid"])
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    cpu_seconds += times.user + times.system
                    rss += process.memory_info().rss
        except psutil.Error:
            pass
        return {"cpu_seconds": cpu_seconds, "memory_bytes": memory if memory is not None else rss, "rss_bytes": rss}
