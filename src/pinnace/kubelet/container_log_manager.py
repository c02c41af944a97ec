"""Container log rotation for CRI runtimes, as the kubelet's ContainerLogManager does it.

containerd writes each container's log file and never rotates it; the kubelet does. Every
`containerLogMonitorInterval` (10 s) it looks at the log file of every running container, and when one
has reached `containerLogMaxSize` (10Mi) it
1. removes what an interrupted round left (`*.tmp`, and an uncompressed file whose `.gz` exists),
2. removes the oldest rotated files, so that with the current file at most `containerLogMaxFiles` (5)
   remain once this round is done,
3. gzips the rotated files, so that after the round only the newest rotated file is plain (a
   `kubectl logs -f` may still be reading that one),
4. renames the log to `<log>.<YYYYmmdd-HHMMSS>` and asks the runtime to write a new one (CRI
   ReopenContainerLog); when the runtime refuses, the rename is undone and the next round tries again.
A running container whose log file is missing gets it reopened. `kubectl logs` reads the current file
only, as in Kubernetes. When the kubelet removes a container it removes its log files too (`clean`).

Where pinnace differs: when the timestamped name is taken (two rotations within one second, only
possible with a sub-second monitor interval) the rotation waits for the next round instead of
overwriting the older file.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import gzip
import logging
import os
import shutil
import time
from typing import Any

from pinnace.kubelet.runtime.base import ContainerState, RuntimeFailure

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
COMPRESS_SUFFIX = ".gz"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"  # Go's "20060102-150405"


def unused_logs(rotated: list[str]) -> list[str]:
    """Leftovers of an interrupted round: temporary files, and uncompressed files already compressed."""
    names = set(rotated)
    return [name for name in rotated
            if name.endswith(TMP_SUFFIX) or (not name.endswith(COMPRESS_SUFFIX) and name + COMPRESS_SUFFIX in names)]


def excess_logs(rotated: list[str], max_files: int) -> list[str]:
    """The oldest rotated files to remove before a rotation. The current file and the one about to be
    rotated count among `max_files`, so `max_files - 2` older ones stay."""
    ordered = sorted(rotated)
    keep = max(max_files - 2, 0)
    return ordered[: len(ordered) - keep]


def logs_to_compress(rotated: list[str]) -> list[str]:
    """Rotated files not compressed yet. Compressed before the next file is rotated, so that after a
    round only the newest rotated file is plain (a `kubectl logs -f` may still be reading it)."""
    return [name for name in sorted(rotated) if not name.endswith((COMPRESS_SUFFIX, TMP_SUFFIX))]


def rotated_logs(path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(path) + ".*"))


def compress(path: str) -> None:
    """`<path>.gz` through a temporary file, so that a crash leaves no half-written `.gz`."""
    target = path + COMPRESS_SUFFIX
    with open(path, "rb") as source, gzip.open(target + TMP_SUFFIX, "wb") as sink:
        shutil.copyfileobj(source, sink)
    os.replace(target + TMP_SUFFIX, target)
    os.remove(path)


def prepare_rotation(path: str, max_files: int) -> None:
    """Steps 1-3: make room for the file about to be rotated."""
    rotated = rotated_logs(path)
    for name in unused_logs(rotated):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    rotated = rotated_logs(path)
    for name in excess_logs(rotated, max_files):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    for name in logs_to_compress(rotated_logs(path)):
        compress(name)


class ContainerLogManager:
    """Rotates the log files of a runtime's running containers (a runtime with `reopen_container_log`)."""

    def __init__(self, runtime: Any, max_size: int, max_files: int, monitor_interval: float = 10.0) -> None:
        self.runtime = runtime
        self.max_size = max_size
        self.max_files = max_files
        self.monitor_interval = monitor_interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.monitor_interval)
            try:
                await self.rotate_logs()
            except (RuntimeFailure, OSError) as error:  # the runtime may be restarting: next round
                log.warning("rotating container logs: %s", error)

    async def rotate_logs(self) -> None:
        for status in await self.runtime.list_containers():
            if status.state != ContainerState.RUNNING or not status.log_path:
                continue
            try:
                await self.rotate_log(status.id, status.log_path)
            except (RuntimeFailure, OSError) as error:  # one container's trouble does not stop the others
                log.warning("rotating the log of container %s: %s", status.id, error)

    async def rotate_log(self, container_id: str, path: str) -> bool:
        """Rotate `path` when it reached the maximum size; True when it did."""
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            await self.runtime.reopen_container_log(container_id)  # gone (removed by hand?): a new one
            return False
        if size < self.max_size:
            return False
        await asyncio.to_thread(prepare_rotation, path, self.max_files)
        rotated = f"{path}.{time.strftime(TIMESTAMP_FORMAT)}"
        if os.path.exists(rotated) or os.path.exists(rotated + COMPRESS_SUFFIX):
            return False
        os.rename(path, rotated)
        try:
            await self.runtime.reopen_container_log(container_id)
        except RuntimeFailure:
            os.rename(rotated, path)  # as the kubelet: try again next round
            raise
        return True

    async def clean(self, container_id: str) -> None:
        """Remove a container's log file and its rotated files (before the container is removed)."""
        status = await self.runtime.container_status(container_id)
        if status is None or not status.log_path:
            return
        for name in [status.log_path, *rotated_logs(status.log_path)]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
