"""Container log rotation for CRI runtimes: which files go, which get compressed, a rotation round
against a fake runtime that reopens log files as containerd does, and following a log across one."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import pytest

from pinnace.kubelet.agent import KubeletConfig, KubeletError, container_log_manager
from pinnace.kubelet.container_log_manager import (
    ContainerLogManager,
    excess_logs,
    logs_to_compress,
    unused_logs,
)
from pinnace.kubelet.runtime.base import ContainerState, ContainerStatus, RuntimeFailure
from pinnace.kubelet.runtime.crilog import read_logs

LOG = "/logs/c/0.log"
OLD, MID, NEW = (f"{LOG}.2026010{day}-120000" for day in (1, 2, 3))


@pytest.mark.parametrize("rotated, unused", [
    ([], []),
    ([OLD, MID + ".gz", NEW], []),
    ([OLD + ".gz.tmp", MID], [OLD + ".gz.tmp"]),  # a compression that never finished
    ([OLD, OLD + ".gz", NEW], [OLD]),  # compressed, but the plain file was not removed yet
])
def test_leftovers_of_an_interrupted_round_are_unused(rotated, unused):
    assert unused_logs(rotated) == unused


@pytest.mark.parametrize("rotated, max_files, removed", [
    ([], 5, []),
    ([OLD + ".gz", MID + ".gz", NEW], 5, []),  # 3 rotated + current + the one about to rotate = 5
    ([OLD + ".gz", MID + ".gz", NEW], 4, [OLD + ".gz"]),  # oldest first
    ([NEW, OLD + ".gz", MID + ".gz"], 3, [OLD + ".gz", MID + ".gz"]),  # order of the listing does not matter
    ([OLD + ".gz", NEW], 2, [OLD + ".gz", NEW]),  # two files: the current one and the one rotated now
])
def test_the_oldest_rotated_files_make_room_for_the_next_rotation(rotated, max_files, removed):
    assert excess_logs(rotated, max_files) == removed


@pytest.mark.parametrize("rotated, compressed", [
    ([], []),
    ([NEW], [NEW]),  # compressed before the next one is rotated: only the newest stays plain
    ([OLD + ".gz", MID, NEW], [MID, NEW]),
    ([OLD + ".gz", MID + ".gz"], []),
])
def test_rotated_files_are_compressed_before_the_next_rotation(rotated, compressed):
    assert logs_to_compress(rotated) == compressed


@pytest.mark.parametrize("overrides, message", [
    ({"container_log_max_size": "ten"}, "invalid container log max size"),
    ({"container_log_max_size": "0"}, "must be positive"),
    ({"container_log_max_files": 1}, "at least 2"),
])
def test_limits_are_checked_like_the_kubelet_configuration(overrides, message):
    config = KubeletConfig(node_name="n", data_dir="/tmp/unused", **overrides)
    with pytest.raises(KubeletError, match=message):
        container_log_manager(config, FakeRuntime(""))


def test_runtimes_that_rotate_their_own_logs_get_no_manager():
    assert container_log_manager(KubeletConfig(node_name="n", data_dir="/tmp/unused"), object()) is None


class FakeRuntime:
    """One running container whose runtime appends to the file at its log path, as containerd does."""

    def __init__(self, log_path: str, refuse_reopen: bool = False) -> None:
        self.log_path = log_path
        self.refuse_reopen = refuse_reopen
        self.reopened = 0

    async def list_containers(self):
        return [ContainerStatus(id="c1", sandbox_id="s", name="c", attempt=0, state=ContainerState.RUNNING,
                                log_path=self.log_path),
                ContainerStatus(id="c0", sandbox_id="s", name="d", attempt=0, state=ContainerState.EXITED,
                                log_path=self.log_path)]

    async def container_status(self, container_id: str):
        return (await self.list_containers())[0]

    async def reopen_container_log(self, container_id: str) -> None:
        if self.refuse_reopen:
            raise RuntimeFailure("container is not running")
        self.reopened += 1
        Path(self.log_path).touch()

    def write(self, size: int) -> None:
        with open(self.log_path, "ab") as file:
            file.write(b"x" * size)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_a_full_log_is_rotated_and_old_files_compressed_then_removed(tmp_path, monkeypatch):
    runtime = FakeRuntime(str(tmp_path / "0.log"))
    manager = ContainerLogManager(runtime, max_size=100, max_files=3)
    runtime.write(99)
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log"] and runtime.reopened == 0  # below the limit

    clock = iter(["20260101-120000", "20260101-120010", "20260101-120020"])
    monkeypatch.setattr("pinnace.kubelet.container_log_manager.time.strftime", lambda fmt: next(clock))
    runtime.write(1)
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log", "0.log.20260101-120000"] and runtime.reopened == 1
    assert os.path.getsize(tmp_path / "0.log") == 0

    runtime.write(150)
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log", "0.log.20260101-120000.gz", "0.log.20260101-120010"]
    assert gzip.decompress((tmp_path / "0.log.20260101-120000.gz").read_bytes()) == b"x" * 100

    runtime.write(100)
    await manager.rotate_logs()  # at most 3 files: the oldest goes
    assert files(tmp_path) == ["0.log", "0.log.20260101-120010.gz", "0.log.20260101-120020"]

    await manager.clean("c1")
    assert files(tmp_path) == []


async def test_a_refused_reopen_undoes_the_rename_and_a_missing_log_is_reopened(tmp_path):
    runtime = FakeRuntime(str(tmp_path / "0.log"), refuse_reopen=True)
    manager = ContainerLogManager(runtime, max_size=10, max_files=2)
    runtime.write(20)
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log"] and os.path.getsize(tmp_path / "0.log") == 20

    runtime.refuse_reopen = False
    os.remove(tmp_path / "0.log")
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log"] and runtime.reopened == 1


async def test_a_second_rotation_within_the_same_second_waits_for_the_next_round(tmp_path, monkeypatch):
    runtime = FakeRuntime(str(tmp_path / "0.log"))
    manager = ContainerLogManager(runtime, max_size=10, max_files=5)
    monkeypatch.setattr("pinnace.kubelet.container_log_manager.time.strftime", lambda fmt: "20260101-120000")
    runtime.write(10)
    await manager.rotate_logs()
    runtime.write(10)
    await manager.rotate_logs()
    assert files(tmp_path) == ["0.log", "0.log.20260101-120000.gz"]
    assert os.path.getsize(tmp_path / "0.log") == 10  # kept, not written over the older file


async def test_following_a_log_goes_on_across_a_rotation_without_losing_lines(tmp_path):
    path = tmp_path / "0.log"

    def line(n: int) -> bytes:
        return f"2026-01-01T12:00:00.000000000Z stdout F line {n}\n".encode()

    runtime_fd = open(path, "ab", buffering=0)  # what the runtime writes through, as containerd does
    runtime_fd.write(line(1))
    running = True

    async def is_running() -> bool:
        return running

    async def follow() -> bytes:
        return b"".join([chunk async for chunk in read_logs(str(path), follow=True, is_running=is_running,
                                                            poll_interval=0.01)])

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    runtime_fd.write(line(2))
    os.rename(path, f"{path}.20260101-120000")  # the kubelet rotates ...
    runtime_fd.write(line(3))  # ... the runtime still writes to the renamed file ...
    await asyncio.sleep(0.05)  # ... for a moment the log file does not exist ...
    runtime_fd.close()
    runtime_fd = open(path, "ab", buffering=0)  # ... until the runtime reopens it
    runtime_fd.write(line(4))
    await asyncio.sleep(0.05)
    running = False
    runtime_fd.close()
    assert await asyncio.wait_for(follower, 5) == b"line 1\nline 2\nline 3\nline 4\n"
