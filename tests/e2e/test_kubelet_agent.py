"""`pinnace agent` as its own process: SIGKILL it, restart it, and its pods are still there."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import pytest

from pinnace.kubelet.runtime.process import ProcessRuntime
from pinnace.kubelet.testing import IS_ROOT, container, free_port, pod, remove_everything, wait_for

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def start_agent(api_server, data_dir, node, bridge, cidr) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "agent",
        "--server", api_server.url, "--token", api_server.admin_token, "--ca-file", str(api_server.ca_path),
        "--node-name", node, "--data-dir", str(data_dir), "--pod-cidr", cidr, "--bridge", bridge,
        "--node-ip", "127.0.0.1", "--port", str(free_port()), "--read-only-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"registered" in line, line
    return process


async def test_agent_killed_and_restarted_keeps_pods_and_cleans_deleted_ones(api_server, client, tmp_path):
    node = f"node-{uuid.uuid4().hex[:6]}"
    bridge = f"pn-{uuid.uuid4().hex[:8]}"
    cidr = f"10.42.{os.getpid() % 200 + 20}.0/24"
    data_dir = tmp_path / "node"
    agent = await start_agent(api_server, data_dir, node, bridge, cidr)
    try:
        for name in ("keep", "gone"):  # `$$$$` is the shell's `$$`: Kubernetes expands `$$` to `$`
            await client.create(
                "v1/pods",
                pod(name, [container("c", "sh", "-c", f"echo $$$$ > {tmp_path / name}.pid; exec sleep 300")], nodeName=node),
            )
        for name in ("keep", "gone"):
            await wait_for(client, name, lambda p: p["status"].get("phase") == "Running")
        await asyncio.sleep(0.2)
        keep_pid = int((tmp_path / "keep.pid").read_text())
        gone_pid = int((tmp_path / "gone.pid").read_text())
        before = await client.get("v1/pods", "keep", namespace="default")

        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        assert alive(keep_pid) and alive(gone_pid)
        await client.delete("v1/pods", "gone", namespace="default", grace_period_seconds=0)

        agent = await start_agent(api_server, data_dir, node, bridge, cidr)
        for _ in range(100):
            if not alive(gone_pid):
                break
            await asyncio.sleep(0.1)
        assert not alive(gone_pid), "the pod deleted while the agent was down was not cleaned up"
        assert alive(keep_pid), "the running pod was restarted or killed"
        await asyncio.sleep(1)
        after = await client.get("v1/pods", "keep", namespace="default")
        status = after["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0 and "running" in status["state"]
        assert status["containerID"] == before["status"]["containerStatuses"][0]["containerID"]
        if IS_ROOT:
            assert after["status"]["podIP"] == before["status"]["podIP"]

        await client.delete("v1/pods", "keep", namespace="default", grace_period_seconds=1)
        for _ in range(100):
            if not alive(keep_pid):
                break
            await asyncio.sleep(0.1)
        assert not alive(keep_pid)
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGKILL)
            await agent.wait()
        runtime = ProcessRuntime(data_dir, pod_cidr=cidr, bridge=bridge)
        await runtime.start()
        await remove_everything(runtime)
