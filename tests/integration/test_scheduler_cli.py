"""`pinnace scheduler --kubeconfig K [--config FILE]` as its own process against a real API server."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def node(name: str, cpu: str, memory: str) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": allocatable, "capacity": allocatable}}


def pod(name: str, cpu: str, scheduler_name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": scheduler_name, "containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}}


async def add_nodes(client, *nodes: dict) -> None:
    for n in nodes:
        created = await client.create("v1/nodes", n)
        if not (created.get("status") or {}).get("allocatable"):
            created["status"] = n["status"]
            await client.update_status("v1/nodes", created)


async def wait_bound(client, name: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node_name = (await client.get("v1/pods", name, namespace="default"))["spec"].get("nodeName")
        if node_name:
            return node_name
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} not bound within {timeout}s")


async def test_scheduler_command_binds_pods_with_a_config_file(client, kubeconfig, tmp_path):
    config = tmp_path / "scheduler.yaml"
    config.write_text("""
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: packer
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
""")
    await add_nodes(client, node("big", "8", "16Gi"), node("small", "2", "4Gi"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "scheduler", "--kubeconfig", str(kubeconfig), "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await client.create("v1/pods", pod("packed", "1", "packer"))
        assert await wait_bound(client, "packed") == "small"
        lease = await client.get("coordination.k8s.io/v1/leases", "kube-scheduler", namespace="kube-system")
        assert lease["spec"]["holderIdentity"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert process.returncode == 0, (await process.stderr.read()).decode()


async def test_bad_config_file_is_a_one_line_error(kubeconfig, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("profiles: [{schedulerName: a}, {schedulerName: a}]\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "scheduler", "--kubeconfig", str(kubeconfig), "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert stderr.decode().startswith("error: cannot use scheduler configuration")
