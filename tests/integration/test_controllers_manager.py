"""The controller manager as users run it: every controller, leader-elected, and as a command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from tests.integration.node_double import NodeDouble, deployment, eventually

from pinnace.controllers.base import ControllerConfig
from pinnace.controllers.manager import CONTROLLERS, ControllerManager


async def has_replica_set(client, name: str) -> bool:
    sets = (await client.list("apps/v1/replicasets", namespace="default", label_selector=f"app={name}"))["items"]
    return bool(sets)


async def test_all_controllers_with_leader_handover(client):
    nodes = await NodeDouble(client).start()
    first = ControllerManager(client, ControllerConfig(), identity="first", lease_duration=3.0)
    second = ControllerManager(client, ControllerConfig(), identity="second", lease_duration=3.0)
    try:
        await first.start()
        await first.wait_running(timeout=30)
        assert sorted(c.name for c in first.controllers) == sorted(CONTROLLERS)
        await second.start()
        await client.create("apps/v1/deployments", deployment("one", 1), namespace="default")
        await eventually(lambda: has_replica_set(client, "one"))
        assert not second.running.is_set()  # only the leader reconciles

        await first.stop()  # releases the Lease: the second takes over at once
        await second.wait_running(timeout=15)
        await client.create("apps/v1/deployments", deployment("two", 1), namespace="default")
        await eventually(lambda: has_replica_set(client, "two"))
        lease = await client.get("coordination.k8s.io/v1/leases", "kube-controller-manager", namespace="kube-system")
        assert lease["spec"]["holderIdentity"] == "second"
    finally:
        await first.stop()
        await second.stop()
        await nodes.close()


async def test_controller_manager_command(client, kubeconfig, tmp_path):
    # Its log goes to a file: an unread pipe fills up and blocks the process in its next log write.
    log_path = tmp_path / "controller-manager.log"
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pinnace", "controller-manager", f"--kubeconfig={kubeconfig}",
            "--controllers=replicaset,deployment", "--no-leader-elect",
            stdout=asyncio.subprocess.DEVNULL, stderr=log, env={**os.environ})
    try:
        await client.create("apps/v1/deployments", deployment("cli", 2), namespace="default")

        async def pods_created():
            pods = (await client.list("v1/pods", namespace="default", label_selector="app=cli"))["items"]
            return len(pods) == 2
        try:
            await eventually(pods_created, timeout=30)
        except AssertionError as error:
            raise AssertionError(f"{error}\ncontroller-manager log:\n{log_path.read_text()[-3000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert process.returncode == 0, log_path.read_text()[-3000:]
