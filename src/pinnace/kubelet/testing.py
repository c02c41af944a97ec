"""Helpers for tests of the node agent: a Kubelet on a unique bridge and pod CIDR, and clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import sys
import time
import uuid

from pinnace.kubelet.agent import Kubelet, KubeletConfig

PY = sys.executable
IS_ROOT = os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubelet_config(data_dir, **overrides) -> KubeletConfig:
    suffix = random.randrange(1, 250)
    name = overrides.pop("node_name", f"node-{uuid.uuid4().hex[:6]}")
    config = KubeletConfig(
        node_name=name,
        data_dir=str(data_dir),
        pod_cidr=f"10.42.{suffix}.0/24",
        bridge=f"pn-{uuid.uuid4().hex[:8]}",
        node_ip="127.0.0.1",
        port=free_port(),
        read_only_port=free_port(),
        backoff_initial=0.5,
        backoff_max=2.0,
        resync_seconds=2.0,
        volume_refresh_seconds=1.0,
        pod_cidr_wait_seconds=0,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


async def stop_and_clean(kubelet: Kubelet, kill_pods: bool = True) -> None:
    """Stop the kubelet and remove everything it made: processes, namespaces, bridge, cgroups."""
    runtime = kubelet.runtime
    await kubelet.stop(remove_pods=kill_pods)
    if kill_pods:
        await remove_everything(runtime)  # whatever a half-finished start left behind


async def remove_everything(runtime) -> None:
    for sandbox in await runtime.list_pod_sandboxes():
        await runtime.remove_pod_sandbox(sandbox.id)
    for container in await runtime.list_containers():
        await runtime.remove_container(container.id)
    await runtime.close()
    if IS_ROOT:
        await runtime.delete_bridge()
        for controller in ("memory", "cpu"):
            path = f"/sys/fs/cgroup/{controller}/{runtime.cgroup_parent}"
            with contextlib.suppress(OSError):
                for child in os.listdir(path):
                    if os.path.isdir(os.path.join(path, child)):
                        with contextlib.suppress(OSError):
                            os.rmdir(os.path.join(path, child))


def pod(name: str, containers: list[dict], **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": containers, **spec},
    }


def container(name: str, *command: str, **extra) -> dict:
    return {"name": name, "image": "busybox", "command": list(command), **extra}


async def wait_for(client, name: str, predicate, timeout: float = 20, namespace: str = "default") -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = await client.get("v1/pods", name, namespace=namespace)
            if predicate(last):
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"pod {name} did not reach the expected state; last status: {(last or {}).get('status')}")


def condition(pod_obj: dict, kind: str) -> str | None:
    for item in (pod_obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return item["status"]
    return None


def container_status(pod_obj: dict, name: str) -> dict:
    for item in (pod_obj.get("status") or {}).get("containerStatuses") or []:
        if item["name"] == name:
            return item
    return {}


def cleanup_cgroup_parent(parent: str) -> None:
    for controller in ("memory", "cpu"):
        shutil.rmtree(f"/sys/fs/cgroup/{controller}/{parent}", ignore_errors=True)
