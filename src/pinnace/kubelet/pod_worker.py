"""One pod worker per pod: a level-triggered sync that drives the runtime toward the pod spec.

Each sync reads the latest pod from the informer and what the runtime has, takes the steps that are
due, and writes the pod's status through `pods/status` when it changed:
1. a pod being deleted: preStop hooks, SIGTERM, the grace period, SIGKILL (all containers at once),
   then the pod is deleted with grace 0 and its sandbox, volumes and logs removed;
2. a pod past `activeDeadlineSeconds`: every container killed, phase Failed, reason DeadlineExceeded;
3. otherwise: the sandbox, the volumes, the init containers one at a time (each must succeed), then
   every app container; exited containers restart per `restartPolicy` with CrashLoopBackOff (no wait
   before the first restart, then `backoff_initial` doubling to `backoff_max`, forgotten after a
   container ran `backoff_reset` seconds).
The worker wakes on informer events, container exits, probe results and back-off expiry.

The worker keeps no state the runtime or the API holds, except what neither can tell it: probe
verdicts, back-off delays and termination messages already read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pinnace.api.quantity import bytes_of, cpu_millis
from pinnace.kubelet.container_spec import ConfigError, build_env, command_line, qos_class, resolv_conf
from pinnace.kubelet.images import image_command
from pinnace.kubelet.probes import Prober, run_handler
from pinnace.kubelet.runtime.base import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    Mount,
    PodSandboxConfig,
    RuntimeFailure,
    SandboxState,
)
from pinnace.kubelet.security_context import effective_security_context, pod_is_privileged
from pinnace.kubelet.volumes import VolumeError

if TYPE_CHECKING:
    from pinnace.kubelet.agent import Kubelet

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@dataclass
class ContainerTrack:
    """What the worker knows about one container name beyond the runtime's records."""

    name: str
    init: bool
    container_id: str | None = None
    previous_id: str | None = None
    restart_count: int = 0
    backoff: float = 0.0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    started: bool = False
    ready: bool | None = None  # readiness verdict; None until the first one
    liveness_failed: str | None = None
    image: str | None = None  # the spec's image when this kubelet started the instance; None: adopted
    probers: list[asyncio.Task] = field(default_factory=list)
    waiter: asyncio.Task | None = None
    messages: dict[str, str] = field(default_factory=dict)  # container id -> termination message

    def stop_probers(self) -> None:
        for task in self.probers:
            task.cancel()
        self.probers = []


class PodWorker:
    def __init__(self, kubelet: Kubelet, key: str, pod: dict) -> None:
        self.kubelet = kubelet
        self.runtime = kubelet.runtime
        self.key = key
        self.pod: dict | None = pod
        self.uid = pod["metadata"]["uid"]
        self.sandbox_id: str | None = None
        self.tracks: dict[str, ContainerTrack] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.done = asyncio.Event()
        self.final_phase: str | None = None
        self.final_reason: str | None = None
        self.final_message: str | None = None
        self.terminating = False
        self.last_status: dict | None = None
        self.start_time: str | None = (pod.get("status") or {}).get("startTime")
        self.volume_paths: dict[str, str] = {}
        self.volumes_refreshed = 0.0
        self.volume_error: str | None = None
        self.next_deadline: float | None = None
        self.pod_ip: str | None = None  # the sandbox's own IP; None in the host network
        self.init_done = False
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            self.final_phase = phase
            self.final_reason = pod["status"].get("reason")
            self.final_message = pod["status"].get("message")

    # ----------------------------------------------------------------- plumbing

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"pod-worker {self.key}")

    def update(self, pod: dict | None) -> None:
        self.pod = pod
        self.wake.set()

    async def stop(self) -> None:
        """Stop the worker without touching containers (kubelet shutdown)."""
        for track in self.tracks.values():
            track.stop_probers()
            if track.waiter:
                track.waiter.cancel()
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.done.is_set() and self.kubelet.workers.get(self.key) is self:
                del self.kubelet.workers[self.key]

    async def _run(self) -> None:
        while True:
            try:
                await self.adopt()
                break
            except RuntimeFailure as error:  # the runtime is restarting (containerd): try again, never give up the pod
                log.warning("pod %s: listing the runtime's state failed: %s; retrying", self.key, error)
                await asyncio.sleep(1)
        while not self.done.is_set():
            self.wake.clear()
            self.next_deadline = None
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must survive one bad sync; the next one retries
                log.exception("syncing pod %s failed", self.key)
                self.schedule(time.time() + 2)
            if self.done.is_set():
                break
            timeout = None if self.next_deadline is None else max(self.next_deadline - time.time(), 0.01)
            timeout = min(timeout or self.kubelet.config.resync_seconds, self.kubelet.config.resync_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def schedule(self, when: float) -> None:
        if self.next_deadline is None or when < self.next_deadline:
            self.next_deadline = when

    def spec_containers(self) -> list[tuple[dict, bool]]:
        assert self.pod is not None
        spec = self.pod["spec"]
        return [(c, True) for c in spec.get("initContainers") or []] + [(c, False) for c in spec.get("containers") or []]

    def track(self, name: str, init: bool) -> ContainerTrack:
        if name not in self.tracks:
            self.tracks[name] = ContainerTrack(name, init)
        return self.tracks[name]

    async def adopt(self) -> None:
        """Find this pod's sandbox and containers left by an earlier kubelet, and keep them running."""
        sandboxes = [s for s in await self.runtime.list_pod_sandboxes() if s.uid == self.uid]
        if not sandboxes:
            return
        sandboxes.sort(key=lambda s: s.created_at)
        self.sandbox_id = sandboxes[-1].id
        self.pod_ip = sandboxes[-1].ip
        containers = await self.runtime.list_containers(self.sandbox_id)
        by_name: dict[str, list[ContainerStatus]] = {}
        for container in containers:
            by_name.setdefault(container.name, []).append(container)
        init_names = {c["name"] for c in (self.pod or {}).get("spec", {}).get("initContainers") or []}
        for name, instances in by_name.items():
            instances.sort(key=lambda c: c.attempt)
            track = self.track(name, name in init_names)
            track.container_id = instances[-1].id
            track.previous_id = instances[-2].id if len(instances) > 1 else None
            track.restart_count = instances[-1].attempt
            if instances[-1].state == ContainerState.RUNNING:
                self.watch_exit(track, instances[-1].id)
                track.started = True
                spec = next((c for c, _ in self.spec_containers() if c["name"] == name), None)
                if spec is not None:
                    self.start_probers(track, spec)

    def watch_exit(self, track: ContainerTrack, container_id: str) -> None:
        async def wait() -> None:
            await self.runtime.wait_container(container_id)
            self.wake.set()

        if track.waiter:
            track.waiter.cancel()
        track.waiter = asyncio.get_running_loop().create_task(wait())

    # ----------------------------------------------------------------- sync

    async def sync(self) -> None:
        pod = self.pod
        if pod is None:
            # Deleted from the API without us (forced deletion or deleted while we were down).
            await self.kill_all(self.grace_period(None))
            await self.cleanup()
            self.done.set()
            return
        if pod["metadata"].get("deletionTimestamp"):
            await self.terminate(pod)
            return
        statuses = await self.container_statuses()
        if self.final_phase is None:
            deadline = pod["spec"].get("activeDeadlineSeconds")
            if deadline is not None and self.start_time:
                from pinnace.api.meta import parse_time

                expires = parse_time(self.start_time).timestamp() + int(deadline)
                if time.time() >= expires:
                    self.kubelet.recorder.event(pod, "Normal", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
                    await self.kill_all(self.grace_period(pod))
                    self.final_phase, self.final_reason = "Failed", "DeadlineExceeded"
                    self.final_message = "Pod was active on the node longer than the specified deadline"
                else:
                    self.schedule(expires)
        if self.final_phase is None:
            await self.converge(pod, statuses)
            statuses = await self.container_statuses()
        elif self.sandbox_id is not None:
            sandbox = await self.runtime.pod_sandbox_status(self.sandbox_id)
            if sandbox is not None and sandbox.state == SandboxState.READY:
                await self.kill_all(0)
                await self.runtime.stop_pod_sandbox(self.sandbox_id)
        await self.write_status(pod, statuses)

    async def container_statuses(self) -> dict[str, ContainerStatus]:
        result = {}
        for track in self.tracks.values():
            for container_id in (track.container_id, track.previous_id):
                if container_id:
                    status = await self.runtime.container_status(container_id)
                    if status is not None:
                        result[container_id] = status
        return result

    async def converge(self, pod: dict, statuses: dict[str, ContainerStatus]) -> None:
        if not await self.ensure_sandbox(pod):
            return
        if not await self.ensure_volumes(pod):
            return
        policy = pod["spec"].get("restartPolicy", "Always")
        self.init_done = False
        # Init containers, one at a time, in order.
        for spec in pod["spec"].get("initContainers") or []:
            track = self.track(spec["name"], True)
            status = statuses.get(track.container_id or "")
            sidecar = spec.get("restartPolicy") == "Always"
            if status is None:
                await self.start_container(pod, track, spec)
                if not (sidecar and track.started):
                    return
                continue
            if sidecar:
                # A sidecar (an init container with restartPolicy Always, Kubernetes 1.28+): the next
                # container starts once it has started, and it is restarted for the pod's lifetime.
                if status.state == ContainerState.EXITED:
                    await self.restart_with_backoff(pod, track, spec, status)
                    return
                if status.state == ContainerState.RUNNING and track.liveness_failed:
                    track.liveness_failed = None
                    await self.kill_container(pod, track, spec, self.grace_period(pod))
                    return
                if not track.started:
                    return
                continue
            if status.state == ContainerState.RUNNING:
                return
            if status.state == ContainerState.EXITED:
                if status.exit_code == 0:
                    continue
                if policy == "Never":
                    self.final_phase = "Failed"
                    return
                await self.restart_with_backoff(pod, track, spec, status)
                return
            return
        self.init_done = True
        # App containers, together.
        for spec in pod["spec"].get("containers") or []:
            track = self.track(spec["name"], False)
            status = statuses.get(track.container_id or "")
            if status is None:
                await self.start_container(pod, track, spec)
                continue
            image_changed = track.image is not None and track.image != spec.get("image", "")
            if status.state == ContainerState.RUNNING and image_changed and not track.liveness_failed:
                # The only mutable container field: like the kubelet, restart the container on the new image.
                self.kubelet.recorder.event(
                    pod, "Normal", "Killing", f"Container {spec['name']} definition changed, will be restarted"
                )
                await self.kill_container(pod, track, spec, self.grace_period(pod))
                track.backoff = 0.0
                await self.start_container(pod, track, spec)
                continue
            if status.state == ContainerState.RUNNING and track.liveness_failed:
                message = track.liveness_failed
                track.liveness_failed = None
                self.kubelet.recorder.event(
                    pod, "Normal", "Killing", f"Container {spec['name']} failed liveness probe, will be restarted"
                )
                await self.kill_container(pod, track, spec, self.grace_period(pod))
                log.info("pod %s container %s failed liveness: %s", self.key, spec["name"], message)
                status = await self.runtime.container_status(track.container_id or "")
                if status is None:
                    continue
            if status.state == ContainerState.EXITED:
                restart = policy == "Always" or (policy == "OnFailure" and status.exit_code != 0)
                if restart:
                    await self.restart_with_backoff(pod, track, spec, status)

    async def restart_with_backoff(self, pod: dict, track: ContainerTrack, spec: dict, status: ContainerStatus) -> None:
        config = self.kubelet.config
        finished = status.finished_at or time.time()
        if status.started_at and finished - status.started_at >= config.backoff_reset:
            track.backoff = 0.0
        until = finished + track.backoff
        if time.time() < until:
            track.waiting_reason = "CrashLoopBackOff"
            track.waiting_message = (
                f"back-off {track.backoff:g}s restarting failed container={spec['name']} pod={pod['metadata']['name']}_"
                f"{pod['metadata'].get('namespace', 'default')}({self.uid})"
            )
            self.schedule(until)
            return
        track.backoff = config.backoff_initial if track.backoff == 0 else min(track.backoff * 2, config.backoff_max)
        if track.restart_count > 0 or track.backoff > config.backoff_initial:
            self.kubelet.recorder.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {spec['name']}")
        await self.start_container(pod, track, spec)

    async def ensure_sandbox(self, pod: dict) -> bool:
        if self.sandbox_id is not None:
            status = await self.runtime.pod_sandbox_status(self.sandbox_id)
            if status is not None and status.state == SandboxState.READY:
                return True
            if status is not None:
                await self.runtime.remove_pod_sandbox(self.sandbox_id)
            self.sandbox_id = None
        metadata = pod["metadata"]
        try:
            self.sandbox_id = await self.runtime.run_pod_sandbox(
                PodSandboxConfig(
                    name=metadata["name"],
                    namespace=metadata.get("namespace", "default"),
                    uid=self.uid,
                    hostname=pod["spec"].get("hostname") or metadata["name"],
                    host_network=bool(pod["spec"].get("hostNetwork")),
                    log_directory=str(self.kubelet.pod_log_dir(pod)),
                    privileged=pod_is_privileged(pod),
                    dns_policy=pod["spec"].get("dnsPolicy") or "ClusterFirst",
                    dns_config=pod["spec"].get("dnsConfig"),
                    port_mappings=[port for c in pod["spec"].get("containers") or [] for port in c.get("ports") or []
                                   if port.get("hostPort")],
                )
            )
        except RuntimeFailure as error:
            self.kubelet.recorder.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {error}")
            self.schedule(time.time() + 5)
            return False
        status = await self.runtime.pod_sandbox_status(self.sandbox_id)
        self.pod_ip = status.ip if status is not None else None
        if self.start_time is None:
            self.start_time = iso(time.time())
        return True

    async def ensure_volumes(self, pod: dict) -> bool:
        now = time.time()
        if self.volume_paths and self.volume_error is None and now - self.volumes_refreshed < self.kubelet.config.volume_refresh_seconds:
            self.schedule(self.volumes_refreshed + self.kubelet.config.volume_refresh_seconds)
            return True
        try:
            self.volume_paths = await self.kubelet.volumes.setup(pod)
            self.volume_error = None
        except VolumeError as error:
            if self.volume_error != str(error):
                self.kubelet.recorder.event(pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {error}")
            self.volume_error = str(error)
            self.schedule(now + 2)
            # Volumes that worked once stay usable while their source is briefly missing.
            return bool(self.volume_paths)
        self.volumes_refreshed = now
        self.schedule(now + self.kubelet.config.volume_refresh_seconds)
        return True

    def grace_period(self, pod: dict | None) -> float:
        pod = pod or self.pod
        if pod is None:
            return 2.0
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    # ----------------------------------------------------------------- containers

    def termination_file(self, pod: dict, name: str, attempt: int) -> Path:
        return self.kubelet.volumes.pod_dir(pod) / "containers" / name / f"{attempt}-termination-log"

    async def start_container(self, pod: dict, track: ContainerTrack, spec: dict) -> None:
        assert self.sandbox_id is not None
        kubelet = self.kubelet
        attempt = track.restart_count + 1 if track.container_id else 0
        try:
            env = await build_env(pod_with_ips(pod, kubelet, self.sandbox_ip()), spec, kubelet.get_object, await kubelet.services_for(pod), kubelet.allocatable)
        except ConfigError as error:
            self.config_error(pod, track, str(error))
            return
        images = getattr(kubelet, "images", None)
        if images is not None:
            # A runtime with images: the image comes first; command and args only override its
            # ENTRYPOINT and CMD, so both may be empty.
            failure = await images.ensure(pod, spec)
            if failure is not None:
                track.waiting_reason, track.waiting_message = failure.reason, failure.message
                self.schedule(failure.retry_at)
                return
            command, args = image_command(spec, env)
        else:
            command, args = command_line(spec, env), []
        if not command and images is None:
            self.config_error(
                pod, track, "the process runtime runs no images: the container must set `command` (image is only recorded)"
            )
            return
        mounts = []
        for mount in spec.get("volumeMounts") or []:
            host = self.volume_paths.get(mount["name"])
            if host is None:
                self.config_error(pod, track, f"volume {mount['name']!r} is not defined in the pod")
                return
            if mount.get("subPath"):
                host = os.path.join(host, mount["subPath"])
                os.makedirs(host, exist_ok=True)
            mounts.append(Mount(host, mount["mountPath"], bool(mount.get("readOnly")), mount["name"]))
        mounts += self.managed_files(pod)
        termination = self.termination_file(pod, spec["name"], attempt)
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        message_path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        env["PINNACE_TERMINATION_MESSAGE_PATH"] = str(termination)
        if getattr(self.runtime, "mount_namespaces", False) and not message_path.startswith("/dev/") and os.path.isdir(os.path.dirname(message_path)):
            mounts.append(Mount(str(termination), message_path, False, "termination-log"))
        resources = spec.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        config = ContainerConfig(
            name=spec["name"],
            command=command,
            image=spec.get("image", ""),
            working_dir=spec.get("workingDir"),
            env=env,
            mounts=mounts,
            log_path=str(kubelet.pod_log_dir(pod) / spec["name"] / f"{attempt}.log"),
            attempt=attempt,
            memory_limit_bytes=bytes_of(limits["memory"]) if "memory" in limits else None,
            cpu_limit_millis=cpu_millis(limits["cpu"]) if "cpu" in limits else None,
            cpu_request_millis=cpu_millis(requests["cpu"]) if "cpu" in requests else None,
            stdin=bool(spec.get("stdin")),
            tty=bool(spec.get("tty")),
            labels={"io.kubernetes.pod.uid": self.uid, "io.kubernetes.container.name": spec["name"]},
            args=args,
            security_context=effective_security_context(pod, spec),
        )
        try:
            container_id = await self.runtime.create_container(self.sandbox_id, config)
        except RuntimeFailure as error:
            self.config_error(pod, track, str(error), error.reason)
            return
        track.stop_probers()
        # Keep one dead instance (for `logs --previous` and lastState), as the kubelet does.
        if track.previous_id:
            log_manager = getattr(kubelet, "container_logs", None)
            if log_manager is not None:  # as the kubelet: a removed container's log files go with it
                await log_manager.clean(track.previous_id)
            await self.runtime.remove_container(track.previous_id)
            track.messages.pop(track.previous_id, None)
        track.previous_id, track.container_id = track.container_id, container_id
        track.restart_count = attempt
        track.image = spec.get("image", "")
        track.waiting_reason, track.waiting_message = "", ""
        track.started = False
        track.ready = None
        if images is None:  # the image manager reported the pull
            kubelet.recorder.event(pod, "Normal", "Pulled", f'Container image "{config.image}" already present on machine')
        kubelet.recorder.event(pod, "Normal", "Created", f"Created container {spec['name']}")
        try:
            await self.runtime.start_container(container_id)
        except RuntimeFailure as error:
            kubelet.recorder.event(pod, "Warning", "Failed", f"Error: {error}")
            self.wake.set()
            return
        kubelet.recorder.event(pod, "Normal", "Started", f"Started container {spec['name']}")
        self.watch_exit(track, container_id)
        post_start = (spec.get("lifecycle") or {}).get("postStart")
        if post_start:
            ok, message = await run_handler(post_start, spec, self.probe_host(), self.exec_in(container_id), 30)
            if not ok:
                kubelet.recorder.event(pod, "Warning", "FailedPostStartHook", f"PostStartHook failed: {message}")
                await self.runtime.stop_container(container_id, self.grace_period(pod))
                return
        self.start_probers(track, spec)

    def managed_files(self, pod: dict) -> list[Mount]:
        """/etc/resolv.conf (cluster DNS) and /etc/hosts of a pod with its own network, as the kubelet
        writes them; only where containers get their own mount namespace (root)."""
        config = self.kubelet.config
        if not getattr(self.runtime, "mount_namespaces", False) or not self.pod_ip or not config.cluster_dns:
            return []
        resolv = resolv_conf(pod, config.cluster_dns, config.cluster_domain)
        if resolv is None or pod["spec"].get("hostNetwork"):
            return []
        directory = self.kubelet.volumes.pod_dir(pod)
        directory.mkdir(parents=True, exist_ok=True)
        mounts = []
        if resolv is not None:
            (directory / "resolv.conf").write_text(resolv)
            mounts.append(Mount(str(directory / "resolv.conf"), "/etc/resolv.conf", True, "resolv.conf"))
        hostname = pod["spec"].get("hostname") or pod["metadata"]["name"]
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{self.pod_ip}\t{hostname}"]
        for alias in pod["spec"].get("hostAliases") or []:
            hosts.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
        (directory / "hosts").write_text("\n".join(hosts) + "\n")
        mounts.append(Mount(str(directory / "hosts"), "/etc/hosts", True, "hosts"))
        return mounts

    def config_error(self, pod: dict, track: ContainerTrack, message: str, reason: str = "CreateContainerConfigError") -> None:
        if (track.waiting_reason, track.waiting_message) != (reason, message):
            self.kubelet.recorder.event(pod, "Warning", "Failed", f"Error: {message}")
        track.waiting_reason, track.waiting_message = reason, message
        self.schedule(time.time() + 5)

    def sandbox_ip(self) -> str | None:
        return self.pod_ip if self.sandbox_id else None

    def probe_host(self) -> str:
        return self.sandbox_ip() or "127.0.0.1"

    def exec_in(self, container_id: str):
        async def run(command: list[str], timeout: float) -> tuple[int, bytes]:
            if hasattr(self.runtime, "exec_sync"):
                # CRI ExecSync: one round trip, and the runtime enforces the timeout.
                try:
                    code, stdout, stderr = await self.runtime.exec_sync(container_id, command, timeout)
                except RuntimeFailure as error:
                    if "timeout" in str(error).lower():
                        raise TimeoutError(str(error)) from error
                    return 126, str(error).encode()
                return code, stdout + stderr
            process = await self.runtime.exec(container_id, command, stdin=False, tty=False)
            try:
                output, _ = await asyncio.wait_for(process.communicate(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise
            return process.returncode or 0, output or b""

        return run

    def start_probers(self, track: ContainerTrack, spec: dict) -> None:
        track.stop_probers()
        container_id = track.container_id
        assert container_id is not None
        loop = asyncio.get_running_loop()

        def on_change(kind: str, ok: bool, message: str) -> None:
            if track.container_id != container_id or self.pod is None:
                return
            if kind == "startup" and ok:
                track.started = True
                launch(("liveness", "readiness"))
            elif kind == "startup" or kind == "liveness":
                if not ok:
                    track.liveness_failed = message
                    self.kubelet.recorder.event(
                        self.pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}"
                    )
            elif kind == "readiness":
                track.ready = ok
                if not ok:
                    self.kubelet.recorder.event(self.pod, "Warning", "Unhealthy", f"Readiness probe failed: {message}")
            self.wake.set()

        def launch(kinds: tuple[str, ...]) -> None:
            for kind in kinds:
                probe = spec.get(f"{kind}Probe")
                if probe:
                    prober = Prober(kind, probe, spec, self.probe_host, self.exec_in(container_id), on_change)
                    track.probers.append(loop.create_task(prober.run()))

        if spec.get("startupProbe"):
            launch(("startup",))
        else:
            track.started = True
            launch(("liveness", "readiness"))

    async def kill_container(self, pod: dict | None, track: ContainerTrack, spec: dict | None, grace: float) -> None:
        track.stop_probers()
        container_id = track.container_id
        if container_id is None:
            return
        status = await self.runtime.container_status(container_id)
        if status is None or status.state != ContainerState.RUNNING:
            return
        started = time.monotonic()
        pre_stop = ((spec or {}).get("lifecycle") or {}).get("preStop")
        if pre_stop and grace > 0:
            with contextlib.suppress(TimeoutError):
                ok, message = await asyncio.wait_for(
                    run_handler(pre_stop, spec or {}, self.probe_host(), self.exec_in(container_id), grace), grace
                )
                if not ok and pod is not None:
                    self.kubelet.recorder.event(pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {message}")
        remaining = max(grace - (time.monotonic() - started), 0)
        # A zero grace period still gets a moment to exit on SIGTERM, as the kubelet's minimum is 2 s.
        await self.runtime.stop_container(container_id, remaining if grace > 0 else 0)

    async def kill_all(self, grace: float) -> None:
        specs = {c["name"]: c for c, _ in self.spec_containers()} if self.pod else {}
        await asyncio.gather(
            *(self.kill_container(self.pod, track, specs.get(name), grace) for name, track in self.tracks.items())
        )

    async def terminate(self, pod: dict) -> None:
        client = self.kubelet.client
        if not self.terminating:
            self.terminating = True
            running = [t.name for t in self.tracks.values() if t.container_id]
            for name in running:
                self.kubelet.recorder.event(pod, "Normal", "Killing", f"Stopping container {name}")
            await self.kill_all(self.grace_period(pod))
            if self.sandbox_id:
                await self.runtime.stop_pod_sandbox(self.sandbox_id)
            if self.final_phase is None:
                statuses = await self.container_statuses()
                policy = pod["spec"].get("restartPolicy", "Always")
                failed = any(s.exit_code not in (0, None) for s in statuses.values())
                self.final_phase = "Failed" if failed and policy != "Always" else "Succeeded"
                if policy == "Always":
                    self.final_phase = "Succeeded" if not failed else "Failed"
            await self.write_status(pod, await self.container_statuses())
        from pinnace.client import NotFound

        try:
            await client.delete(
                "v1/pods",
                pod["metadata"]["name"],
                namespace=pod["metadata"].get("namespace", "default"),
                grace_period_seconds=0,
                preconditions={"uid": self.uid},
            )
        except NotFound:
            pass
        await self.cleanup()
        self.done.set()

    async def cleanup(self) -> None:
        for track in self.tracks.values():
            track.stop_probers()
            if track.waiter:
                track.waiter.cancel()
        for sandbox in await self.runtime.list_pod_sandboxes():
            if sandbox.uid == self.uid:
                await self.runtime.remove_pod_sandbox(sandbox.id)
        await asyncio.to_thread(self.kubelet.volumes.teardown, self.uid)
        await asyncio.to_thread(self.kubelet.remove_pod_logs, self.uid)

    # ----------------------------------------------------------------- status

    def termination_message(self, pod: dict, spec: dict, status: ContainerStatus, track: ContainerTrack) -> str:
        if status.id in track.messages:
            return track.messages[status.id]
        message = ""
        try:
            message = self.termination_file(pod, spec["name"], status.attempt).read_bytes()[:4096].decode(errors="replace")
        except OSError:
            pass
        if not message and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and status.exit_code:
            try:
                lines = Path(status.log_path).read_bytes().splitlines()[-80:]
                message = "\n".join(line.split(b" ", 3)[-1].decode(errors="replace") for line in lines)[-2048:]
            except OSError:
                pass
        track.messages[status.id] = message
        return message

    def container_id(self, status: ContainerStatus) -> str:
        """`<type>://<id>` as the kubelet reports it: the CRI runtime's name (`containerd://`); the
        process runtime, which is no CRI runtime, says `pinnace://`."""
        return f"{getattr(self.runtime, 'container_id_type', 'pinnace')}://{status.id}"

    def terminated(self, pod: dict, spec: dict, status: ContainerStatus, track: ContainerTrack) -> dict:
        result = {
            "exitCode": status.exit_code if status.exit_code is not None else 0,
            "reason": status.reason or ("Completed" if status.exit_code == 0 else "Error"),
            "startedAt": iso(status.started_at or status.created_at),
            "finishedAt": iso(status.finished_at),
            "containerID": self.container_id(status),
        }
        message = self.termination_message(pod, spec, status, track) or status.message
        if message:
            result["message"] = message
        return result

    def container_status_dict(self, pod: dict, spec: dict, track: ContainerTrack, statuses: dict[str, ContainerStatus]) -> dict:
        current = statuses.get(track.container_id or "")
        previous = statuses.get(track.previous_id or "")
        result: dict = {
            "name": spec["name"],
            "image": spec.get("image", ""),
            "imageID": "",
            "restartCount": track.restart_count,
            "ready": False,
            "started": False,
            "state": {},
            "lastState": {},
        }
        if current is not None:
            result["containerID"] = self.container_id(current)
            result["imageID"] = current.image_ref
        if previous is not None:
            result["lastState"] = {"terminated": self.terminated(pod, spec, previous, track)}
        if current is None or current.state == ContainerState.CREATED:
            reason = track.waiting_reason or "ContainerCreating"
            if not track.init and not self.init_done and reason == "ContainerCreating" and pod["spec"].get("initContainers"):
                reason = "PodInitializing"
            result["state"] = {"waiting": {"reason": reason}}
            if track.waiting_message:
                result["state"]["waiting"]["message"] = track.waiting_message
        elif current.state == ContainerState.RUNNING:
            result["state"] = {"running": {"startedAt": iso(current.started_at)}}
            result["started"] = track.started
            has_readiness = bool(spec.get("readinessProbe")) and not track.init
            result["ready"] = track.started and (track.ready is True if has_readiness else True)
        else:
            if track.waiting_reason == "CrashLoopBackOff" and self.final_phase is None and not self.terminating:
                result["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": track.waiting_message}}
                result["lastState"] = {"terminated": self.terminated(pod, spec, current, track)}
            else:
                result["state"] = {"terminated": self.terminated(pod, spec, current, track)}
            if track.init and current.exit_code == 0:
                result["ready"] = True
        return result

    def phase(self, pod: dict, init_statuses: list[dict], app_statuses: list[dict]) -> str:
        if self.final_phase:
            return self.final_phase
        policy = pod["spec"].get("restartPolicy", "Always")
        init_specs = {c["name"]: c for c in pod["spec"].get("initContainers") or []}
        for status in init_statuses:
            spec = init_specs.get(status["name"])
            if init_done_status(status, spec) or (spec and spec.get("restartPolicy") == "Always" and self.init_done):
                continue
            terminated = status["state"].get("terminated")
            if terminated and policy == "Never":
                return "Failed"
            return "Pending"
        running = waiting = stopped = succeeded = 0
        for status in app_statuses:
            state = status["state"]
            if "running" in state:
                running += 1
            elif "terminated" in state:
                stopped += 1
                if state["terminated"]["exitCode"] == 0:
                    succeeded += 1
            elif status["lastState"].get("terminated"):
                stopped += 1  # waiting to restart
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if stopped == len(app_statuses) and stopped:
            if policy == "Always":
                return "Running"
            if policy == "OnFailure":
                return "Succeeded" if stopped == succeeded else "Running"
            return "Succeeded" if stopped == succeeded else "Failed"
        return "Pending"

    async def write_status(self, pod: dict, statuses: dict[str, ContainerStatus]) -> None:
        spec = pod["spec"]
        init_statuses = [
            self.container_status_dict(pod, c, self.track(c["name"], True), statuses) for c in spec.get("initContainers") or []
        ]
        app_statuses = [
            self.container_status_dict(pod, c, self.track(c["name"], False), statuses) for c in spec.get("containers") or []
        ]
        phase = self.phase(pod, init_statuses, app_statuses)
        if phase in ("Succeeded", "Failed") and self.final_phase is None:
            self.final_phase = phase
            self.wake.set()  # next sync stops the sandbox
        init_specs = {c["name"]: c for c in spec.get("initContainers") or []}
        initialized = self.init_done or all(init_done_status(s, init_specs.get(s["name"])) for s in init_statuses)
        containers_ready = bool(app_statuses) and all(s["ready"] for s in app_statuses)
        if phase in ("Succeeded", "Failed"):
            containers_ready = False
        not_ready = [s["name"] for s in app_statuses if not s["ready"]]
        old_conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        now = iso(time.time())

        def condition(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict:
            value = "True" if ok else "False"
            old = old_conditions.get(kind)
            result = {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value and old.get("lastTransitionTime") else now,
            }
            if not ok and reason:
                result["reason"] = reason
            if not ok and message:
                result["message"] = message
            return result

        if phase in ("Succeeded", "Failed"):
            ready_reason, ready_message = "PodCompleted", None
        else:
            ready_reason = "ContainersNotReady"
            ready_message = f"containers with unready status: [{' '.join(not_ready)}]"
        pending_init = [s["name"] for s in init_statuses if not init_done_status(s, init_specs.get(s["name"]))]
        conditions = [
            condition("PodReadyToStartContainers", self.sandbox_id is not None),
            condition(
                "Initialized",
                initialized or phase == "Succeeded",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            ),
            condition("Ready", containers_ready, ready_reason, ready_message),
            condition("ContainersReady", containers_ready, ready_reason, ready_message),
            condition("PodScheduled", True),
        ]
        ip = self.sandbox_ip() if self.sandbox_id else None
        if ip is None and self.sandbox_id is not None:
            ip = self.kubelet.node_ip
        ip = ip or (pod.get("status") or {}).get("podIP")
        status = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.kubelet.node_ip,
            "hostIPs": [{"ip": self.kubelet.node_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}] if ip else None,
            "startTime": self.start_time,
            "qosClass": qos_class(pod),
            "containerStatuses": app_statuses,
            "initContainerStatuses": init_statuses or None,
            "reason": self.final_reason,
            "message": self.final_message,
        }
        if status == self.last_status:
            return
        comparable_old = dict(self.last_status or {})
        self.last_status = status
        from pinnace.client import NotFound

        try:
            await self.kubelet.client.patch(
                "v1/pods",
                pod["metadata"]["name"],
                {"status": status},
                namespace=pod["metadata"].get("namespace", "default"),
                patch_type="merge",
                subresource="status",
            )
        except NotFound:
            pass
        except Exception:
            self.last_status = comparable_old or None  # retry on the next sync
            raise
        self.kubelet.pod_status_changed(self.key, status)


def pod_with_ips(pod: dict, kubelet: Kubelet, ip: str | None) -> dict:
    """The pod as the downward API should see it: with this node's view of hostIP and podIP."""
    status = dict(pod.get("status") or {})
    status["hostIP"] = kubelet.node_ip
    status["hostIPs"] = [{"ip": kubelet.node_ip}]
    pod_ip = ip or kubelet.node_ip
    status["podIP"] = pod_ip
    status["podIPs"] = [{"ip": pod_ip}]
    return {**pod, "status": status}


def init_done_status(status: dict, spec: dict | None) -> bool:
    """An init container counts as done when it succeeded, or, for a sidecar, once it has started."""
    if spec is not None and spec.get("restartPolicy") == "Always":
        return bool(status.get("started")) or "running" in status["state"]
    terminated = status["state"].get("terminated")
    return bool(terminated) and terminated["exitCode"] == 0
