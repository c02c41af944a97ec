"""HA: three `pinnace server`s on a three-member etcd cluster form one control plane.

The three servers are separate processes on separate loopback addresses (127.0.0.11-13, one port),
standing in for three machines: the etcd fixture's members listen on 127.0.0.1, which network-namespace
hosts could not reach. Each server runs its own leader-elected scheduler and controller manager.
While a client writes through all three, one server and one etcd member are killed (SIGKILL): every
acknowledged write survives, the client carries on through the others, kubectl against a survivor
works, the `kubernetes` Service's endpoints drop the dead server, and a Deployment still reconciles.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.fixtures.etcd import etcd_cluster, free_port, requires_etcd  # noqa: F401

from pinnace.client import AlreadyExists, ApiError, Client
from pinnace.client.rest import ConnectionFailed

KUBECTL = shutil.which("kubectl")
pytestmark = [pytest.mark.e2e, requires_etcd,
              pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]

ROOT = Path(__file__).resolve().parents[2]
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


class ServerProcess:
    def __init__(self, data_dir: Path, address: str, port: int, store: str, ca_from: Path | None) -> None:
        self.data_dir, self.address, self.port = data_dir, address, port
        self.url = f"https://{address}:{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "pinnace", "server", "--data-dir", str(data_dir), "--store", store,
                "--bind-address", address, "--port", str(port)]
        if ca_from is not None:
            args += ["--ca-from", str(ca_from)]
        with open(data_dir / "server.log", "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.data_dir / "server.log").read_text()[-3000:]
            if "node join token" in (self.data_dir / "server.log").read_text():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"server {self.url} not ready: {(self.data_dir / 'server.log').read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (ApiError, ConnectionFailed) as error:
            last = error
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def test_three_servers_survive_losing_a_server_and_an_etcd_member(etcd_cluster, tmp_path):  # noqa: F811
    port = free_port()
    store = etcd_cluster.store_url("/pnha")
    servers: list[ServerProcess] = []
    try:
        # The first server makes the CA and tokens; the others take them with --ca-from. Started one after
        # another: the first start of a cluster writes its defaults, later ones find them.
        for i, address in enumerate(ADDRESSES):
            server = ServerProcess(tmp_path / f"s{i}", address, port, store, tmp_path / "s0" if i else None)
            servers.append(server)
            await server.wait_ready()
        admin_token = (tmp_path / "s0" / "pki" / "admin.token").read_text().strip()
        ca = str(tmp_path / "s0" / "pki" / "ca.crt")
        client = Client(servers=[s.url for s in servers], token=admin_token, ca_file=ca, qps=None, max_retries=8)
        client.retry_base = 0.05
        survivor = Client(servers[1].url, token=admin_token, ca_file=ca, qps=None)

        async def endpoint_ips() -> list[str]:
            endpoints = await survivor.get("v1/endpoints", "kubernetes", namespace="default")
            return sorted(a["ip"] for s in endpoints.get("subsets") or () for a in s.get("addresses") or ())

        await until(lambda: _equal(endpoint_ips(), sorted(ADDRESSES)), 20, "every server in the kubernetes endpoints")

        acknowledged: list[str] = []
        stop_writing = asyncio.Event()

        async def writer() -> None:
            index = 0
            while not stop_writing.is_set():
                name = f"ha-{index:05d}"
                try:
                    await client.create("v1/configmaps", {"metadata": {"name": name, "labels": {"ha": "1"}},
                                                          "data": {"i": str(index)}}, namespace="default")
                except AlreadyExists:
                    pass  # an earlier attempt whose answer was lost did land: acknowledged now
                except (ConnectionFailed, ApiError):
                    await asyncio.sleep(0.05)
                    continue  # not acknowledged: send the same object again
                acknowledged.append(name)
                index += 1

        writing = asyncio.create_task(writer())
        await until(lambda: _true(len(acknowledged) >= 30), 30, "writes before the failures")
        servers[0].kill()
        etcd_cluster.members[0].kill()
        at_kill = len(acknowledged)
        await until(lambda: _true(len(acknowledged) >= at_kill + 30), 45, "writes to continue after the failures")
        stop_writing.set()
        await writing
        assert client.server != servers[0].url

        stored = await survivor.list("v1/configmaps", namespace="default", label_selector="ha=1")
        names = {item["metadata"]["name"] for item in stored["items"]}
        lost = [name for name in acknowledged if name not in names]
        assert not lost, f"acknowledged writes lost: {lost}"

        # kubectl against a surviving server, through that server's own admin kubeconfig.
        env = {**os.environ, "KUBECONFIG": str(tmp_path / "s1" / "kubeconfig.yaml"), "HOME": str(tmp_path)}

        def kubectl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=60)

        result = kubectl("get", "configmaps", "-l", "ha=1", "-o", "name")
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) == len(names)
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "after-failover"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "after-failover"}},
                     "template": {"metadata": {"labels": {"app": "after-failover"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "60"]}]}}},
        }
        result = subprocess.run([KUBECTL, "apply", "-f", "-"], input=json.dumps(deployment),
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr

        async def deployment_reconciled() -> bool:
            # The controllers' leader may have died with the first server: another takes its Lease over.
            pods = await survivor.list("v1/pods", namespace="default", label_selector="app=after-failover")
            return len(pods["items"]) == 2

        await until(deployment_reconciled, 60, "the Deployment's pods after the failover")
        await until(lambda: _equal(endpoint_ips(), sorted(ADDRESSES[1:])), 30, "the dead server out of the endpoints")
        result = kubectl("get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[*].addresses[*].ip}")
        assert sorted(result.stdout.split()) == sorted(ADDRESSES[1:]), result.stdout + result.stderr
        await client.close()
        await survivor.close()
    finally:
        for server in servers:
            server.stop()


async def _equal(value, expected) -> bool:
    return (await value) == expected


async def _true(value: bool) -> bool:
    return value
