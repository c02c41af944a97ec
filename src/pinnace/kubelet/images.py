"""Images for runtimes that have them: pull policy, pull secrets, pull back-off, Node images, image GC.

Same behaviour as the kubelet's image manager:
- `imagePullPolicy` defaults from the tag: `:latest` or no tag -> Always, anything else (a tag or a
  digest) -> IfNotPresent. Never fails with ErrImageNeverPull when the image is absent.
- `imagePullSecrets` are Secrets of type kubernetes.io/dockerconfigjson (or the older dockercfg);
  each one's credentials are tried for the image's registry.
- Events: Pulling, Pulled (or "already present on machine"), Failed ("Failed to pull image ..." then
  "Error: ErrImagePull"), BackOff ("Back-off pulling image ..."). A failed pull waits with reason
  ErrImagePull; until the back-off (per pod and image, `backoff_initial` doubling to `backoff_max`)
  expires it waits with ImagePullBackOff and does not pull.
- Node `status.images`: the runtime's images, largest first, at most 50 (Kubernetes'
  nodeStatusMaxImages).
- Garbage collection: when the image file system is at least 85% full, unused images are removed,
  least recently used first, until it is at 80%. An image that a container (running or not) or the
  pause image uses is never removed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pinnace.kubelet.runtime.base import RuntimeFailure

if TYPE_CHECKING:
    from pinnace.kubelet.agent import Kubelet

log = logging.getLogger(__name__)

HIGH_THRESHOLD_PERCENT = 85.0
LOW_THRESHOLD_PERCENT = 80.0
GC_PERIOD_SECONDS = 60.0
NODE_STATUS_MAX_IMAGES = 50


def default_pull_policy(image: str) -> str:
    """Kubernetes' defaulting: Always for `:latest` or an untagged image, else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def docker_configs_of(secret: dict) -> list[dict]:
    """The docker config JSON in an image pull Secret, in the `{"auths": {...}}` shape."""
    data = secret.get("data") or {}
    result = []
    for key in (".dockerconfigjson", ".dockercfg"):
        if key not in data:
            continue
        try:
            config = json.loads(base64.b64decode(data[key]))
        except (ValueError, TypeError):
            continue
        if key == ".dockercfg":
            config = {"auths": config}  # the older format is the auths map itself
        if isinstance(config, dict):
            result.append(config)
    return result


@dataclass
class PullFailure:
    """Why a container cannot start yet: its waiting reason and message, and when to try again."""

    reason: str
    message: str
    retry_at: float


class ImageManager:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.runtime: Any = kubelet.runtime
        self.backoff: dict[tuple[str, str], tuple[float, float, str]] = {}  # (pod uid, image) -> (delay, until, error)
        self.last_used: dict[str, float] = {}  # image id -> when a container last needed it

    async def pull_secrets(self, pod: dict) -> list[dict]:
        namespace = pod["metadata"].get("namespace", "default")
        configs: list[dict] = []
        for reference in pod["spec"].get("imagePullSecrets") or []:
            secret = await self.kubelet.get_object("v1/secrets", namespace, reference.get("name", ""))
            if secret is None:
                # The kubelet goes on without it: the image may be public.
                log.warning("pod %s/%s: image pull secret %s not found", namespace, pod["metadata"]["name"], reference.get("name"))
                continue
            configs.extend(docker_configs_of(secret))
        return configs

    async def ensure(self, pod: dict, container: dict) -> PullFailure | None:
        """Make the container's image present per its pull policy; None when it is ready to use."""
        recorder = self.kubelet.recorder
        config = self.kubelet.config
        image = container.get("image") or ""
        if not image:
            return PullFailure("InvalidImageName", "the container has no image", time.time() + 5)
        policy = container.get("imagePullPolicy") or default_pull_policy(image)
        key = (pod["metadata"]["uid"], image)
        now = time.time()
        delay, until, last_error = self.backoff.get(key, (0.0, 0.0, ""))
        if now < until - delay / 2:
            # Syncs right after the failure (our own status update wakes the worker) keep reporting it.
            return PullFailure("ErrImagePull", last_error, until - delay / 2)
        if now < until:
            recorder.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
            return PullFailure("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {last_error}', until)
        present = await self.runtime.image_id(image)
        if present and policy != "Always":
            recorder.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine')
            self.last_used[present] = now
            return None
        if policy == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            recorder.event(pod, "Warning", "ErrImageNeverPull", message)
            return PullFailure("ErrImageNeverPull", message, now + 5)
        recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            image_id = await self.runtime.pull_image(image, await self.pull_secrets(pod))
        except RuntimeFailure as error:
            delay = config.backoff_initial if delay == 0 else min(delay * 2, config.backoff_max)
            self.backoff[key] = (delay, time.time() + delay, str(error))
            recorder.event(pod, "Warning", "Failed", str(error))
            recorder.event(pod, "Warning", "Failed", "Error: ErrImagePull")
            # Sync again halfway through the back-off, to report ImagePullBackOff as the kubelet does.
            return PullFailure("ErrImagePull", str(error), time.time() + delay / 2)
        self.backoff.pop(key, None)
        self.last_used[image_id] = time.time()
        elapsed = time.monotonic() - started
        recorder.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in {elapsed * 1000:.0f}ms')
        return None

    def forget(self, uid: str) -> None:
        """The pod is gone: drop its back-off entries."""
        for key in [k for k in self.backoff if k[0] == uid]:
            del self.backoff[key]

    async def node_images(self) -> list[dict]:
        images = await self.runtime.list_images()
        images = [i for i in images if i["names"]]
        images.sort(key=lambda i: i["sizeBytes"], reverse=True)
        return images[:NODE_STATUS_MAX_IMAGES]

    async def disk_usage(self) -> tuple[int, int] | None:
        """(used, total) bytes of the image file system."""
        filesystems = await self.runtime.image_fs_usage()
        if not filesystems:
            return None
        usage = await asyncio.to_thread(shutil.disk_usage, filesystems[0]["mountpoint"])
        return usage.used, usage.total

    async def garbage_collect(self) -> list[str]:
        """Remove unused images, least recently used first, from 85% disk use down to 80%; returns their ids."""
        usage = await self.disk_usage()
        if usage is None:
            return []
        used, total = usage
        if used * 100 < HIGH_THRESHOLD_PERCENT * total:
            return []
        to_free = used - int(total * LOW_THRESHOLD_PERCENT / 100)
        in_use = await self.runtime.images_in_use()
        candidates = [i for i in await self.runtime.image_records() if i["id"] not in in_use]
        candidates.sort(key=lambda i: self.last_used.get(i["id"], 0.0))
        removed: list[str] = []
        for image in candidates:
            if to_free <= 0:
                break
            try:
                await self.runtime.remove_image(image["id"])
            except RuntimeFailure as error:  # e.g. a container started using it meanwhile
                log.warning("image garbage collection: removing %s: %s", image["id"], error)
                continue
            removed.append(image["id"])
            self.last_used.pop(image["id"], None)
            to_free -= image["sizeBytes"]
        if removed:
            log.info("image garbage collection removed %d image(s)", len(removed))
        if to_free > 0:
            log.warning("image garbage collection could not free %d more bytes: the remaining images are in use", to_free)
        return removed

    async def gc_loop(self) -> None:
        while True:
            await asyncio.sleep(GC_PERIOD_SECONDS)
            try:
                await self.garbage_collect()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the runtime may be restarting; try again next period
                log.warning("image garbage collection: %s", error)


def image_command(container: dict, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """`command` and `args`, expanded, for a runtime that runs images.

    The runtime resolves them against the image's config as Kubernetes does: `command` replaces the
    ENTRYPOINT (and drops the image's CMD), `args` replaces the CMD; empty ones keep the image's.
    """
    from pinnace.kubelet.container_spec import expand

    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    return command, args
