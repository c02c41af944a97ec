"""Nodes joining from other machines: the join token, node certificates, host-gw pod routes.

Two "machines" are network namespaces on one bridge (10.250.<r>.0/24); the server listens on the
bridge's address in the root namespace. Each machine runs `pinnace agent --server URL --token TOKEN`
with the token `pinnace server` printed: it gets its own certificate through a CSR, its Node turns
Ready, its credentials cannot touch the other node, a second machine cannot take its name, each
machine routes the other's pod CIDR to it, and a pod on one machine answers the other machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.fixtures.polling import until

from pinnace.client import Client, Forbidden, NotFound
from pinnace.kubelet.testing import IS_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.root,
              pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root")]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Hosts:
    """A bridge in the root namespace and network-namespace "machines" plugged into it."""

    def __init__(self) -> None:
        self.tag = f"{random.randrange(16**6):06x}"
        self.subnet = random.randrange(10, 250)
        self.bridge = f"pnha{self.tag}"
        self.gateway = f"10.250.{self.subnet}.1"
        self.namespaces: list[str] = []
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, index: int) -> tuple[str, str]:
        name, veth = f"pnh{self.tag}{index}", f"pnv{self.tag}{index}"
        address = f"10.250.{self.subnet}.{10 + index}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "route", "add", "default", "via", self.gateway)
        return name, address

    def cleanup(self) -> None:
        for name in self.namespaces:
            # Pods' own namespaces hang off the machine's bridge; the machine's namespace takes its links along.
            ip("netns", "del", name, check=False)
        ip("link", "del", self.bridge, check=False)


def spawn(args: list[str], log: Path, netns: str | None = None) -> subprocess.Popen:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with open(log, "wb") as out:
        return subprocess.Popen([*prefix, sys.executable, "-m", "pinnace", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=ENV, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def wait_log(process: subprocess.Popen, log: Path, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in {log}: {log.read_text(errors='replace')[-3000:]}")


def pinnace_routes(netns: str) -> str:
    return ip("-n", netns, "route", "show", "proto", "80").stdout


async def test_agents_join_with_the_token_and_route_pods_between_machines(tmp_path):
    hosts = Hosts()
    processes: list[subprocess.Popen] = []
    client: Client | None = None
    try:
        (ns_a, addr_a), (ns_b, addr_b) = hosts.add(1), hosts.add(2)
        port = free_port()
        server_log = tmp_path / "server.log"
        server = spawn(["server", "--data-dir", str(tmp_path / "server"), "--bind-address", hosts.gateway,
                        "--port", str(port)], server_log)
        processes.append(server)
        token = (await wait_log(server, server_log, r"node join token: (\S+)")).group(1)
        assert token.startswith("pn1.")
        url = f"https://{hosts.gateway}:{port}"
        admin_token = (tmp_path / "server" / "pki" / "admin.token").read_text().strip()
        client = Client(url, token=admin_token, ca_file=str(tmp_path / "server" / "pki" / "ca.crt"), qps=None)

        # No CA file given: the agent checks the server's CA against the hash in the token.
        agents = {}
        for name, netns, address in (("joiner-a", ns_a, addr_a), ("joiner-b", ns_b, addr_b)):
            log = tmp_path / f"{name}.log"
            agents[name] = spawn(["agent", "--server", url, "--token", token, "--node-name", name,
                                  "--data-dir", str(tmp_path / name), "--node-ip", address], log, netns)
            processes.append(agents[name])
        for name in agents:
            await wait_log(agents[name], tmp_path / f"{name}.log", "registered")

        async def ready(name: str) -> bool:
            node = await client.get("v1/nodes", name)
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

        for name in agents:
            await until(lambda name=name: ready(name), 30, f"node {name} Ready")
        csrs = (await client.list("certificates.k8s.io/v1/certificatesigningrequests"))["items"]
        signed = {c["spec"]["username"]: c for c in csrs if c.get("status", {}).get("certificate")}
        assert set(signed) == {"system:bootstrap:node-join"} and len(csrs) == 2

        # Each node's credentials (its kubeconfig from the join) reach only its own Node.
        async with await Client.from_kubeconfig(tmp_path / "joiner-a" / "kubeconfig.yaml", qps=None) as node_a:
            me = await node_a.get("v1/nodes", "joiner-a")
            assert me["metadata"]["name"] == "joiner-a"
            with pytest.raises(Forbidden, match='node "joiner-a" is not allowed to modify node "joiner-b"'):
                await node_a.patch("v1/nodes", "joiner-b", {"metadata": {"labels": {"taken": "over"}}})

        # A second machine cannot take a joined node's name (it has its own key).
        thief_log = tmp_path / "thief.log"
        thief = spawn(["agent", "--server", url, "--token", token, "--node-name", "joiner-a",
                       "--data-dir", str(tmp_path / "thief")], thief_log, ns_b)
        processes.append(thief)
        assert thief.wait(60) != 0
        assert "NodeNameInUse" in thief_log.read_text()

        # host-gw: each machine routes the other's pod CIDR to that machine's address.
        cidr = {name: (await client.get("v1/nodes", name))["spec"]["podCIDR"] for name in agents}
        await until(lambda: _true(f"{cidr['joiner-b']} via {addr_b}" in pinnace_routes(ns_a)), 20, "a route to b's pods on a")
        await until(lambda: _true(f"{cidr['joiner-a']} via {addr_a}" in pinnace_routes(ns_b)), 20, "a route to a's pods on b")

        # A pod on machine a answers machine b, through those routes.
        answer = "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 8080))\ns.listen()\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'pinnace')\n    c.close()\n"
        pod = {"metadata": {"name": "answer"},
               "spec": {"nodeName": "joiner-a", "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": "none", "command": [sys.executable, "-c", answer]}]}}
        await client.create("v1/pods", pod, namespace="default")

        async def pod_ip() -> str | None:
            status = (await client.get("v1/pods", "answer", namespace="default")).get("status") or {}
            return status.get("podIP") if status.get("phase") == "Running" else None

        address = await until(pod_ip, 30, "the pod to run")
        probe = f"import socket\ns = socket.create_connection(('{address}', 8080), timeout=3)\nprint(s.recv(16).decode())"

        async def reachable_from_b() -> bool:
            result = subprocess.run(["ip", "netns", "exec", ns_b, sys.executable, "-c", probe],
                                    capture_output=True, text=True, timeout=20)
            return result.stdout.strip() == "pinnace"

        await until(reachable_from_b, 20, f"pod {address} on a reachable from b")
        await client.delete("v1/pods", "answer", namespace="default", grace_period_seconds=0)

        async def pod_gone() -> bool:
            try:
                await client.get("v1/pods", "answer", namespace="default")
            except NotFound:
                return True
            return False

        await until(pod_gone, 30, "the pod to be removed")

        # A node that leaves takes its route along.
        stop(agents["joiner-b"])
        await client.delete("v1/nodes", "joiner-b")
        await until(lambda: _true(cidr["joiner-b"] not in pinnace_routes(ns_a)), 20, "b's route gone from a")
    finally:
        if client is not None:
            await client.close()
        for process in reversed(processes):
            stop(process)
        hosts.cleanup()


async def _true(value: bool) -> bool:
    return value
