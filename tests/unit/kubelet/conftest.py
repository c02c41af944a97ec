"""Fixtures for node agent tests: a process runtime on a unique bridge and pod CIDR, always cleaned up."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from pinnace.kubelet.runtime.process import ProcessRuntime

is_root = os.geteuid() == 0


def unique_network() -> tuple[str, str]:
    suffix = random.randrange(1, 250)
    return f"pn-t{os.getpid() % 10000}{suffix}"[:15], f"10.42.{suffix}.0/24"


@pytest.fixture
async def runtime(tmp_path):
    bridge, cidr = unique_network()
    rt = ProcessRuntime(tmp_path, pod_cidr=cidr, bridge=bridge, cgroup_parent=f"pinnace-test-{os.getpid()}")
    await rt.start()
    try:
        yield rt
    finally:
        for sandbox in await rt.list_pod_sandboxes():
            await rt.remove_pod_sandbox(sandbox.id)
        for container in await rt.list_containers():
            await rt.remove_container(container.id)
        await rt.close()
        if is_root:
            await rt.delete_bridge()
            for controller in ("memory", "cpu"):
                shutil.rmtree(f"/sys/fs/cgroup/{controller}/{rt.cgroup_parent}", ignore_errors=True)
                try:
                    os.rmdir(f"/sys/fs/cgroup/{controller}/{rt.cgroup_parent}")
                except OSError:
                    pass
