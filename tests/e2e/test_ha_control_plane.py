"""HA: three machines, each running an etcd member and a `pinnace server`, form one control plane.

Each "machine" is a network-namespace host (`pinnace.cli.netns_hosts`) on a bridge and subnet of this
test's own (pn-ha-hosts, 10.45.0.0/24, apart from `pinnace up`'s pinnace-hosts, 10.44.0.0/24): host i
(10.45.0.2-4) runs etcd member i on <its address>:2379/2380 and `pinnace server` i on <its address>:6443,
both inside its namespace, and the servers share the store
`etcd://10.45.0.2:2379,10.45.0.3:2379,10.45.0.4:2379/pnha`. A fourth host (10.45.0.5) runs a node agent
joined with `--server https://10.45.0.2:6443,https://10.45.0.3:6443,https://10.45.0.4:6443` and the join
token. The test itself runs in the machine's root namespace and reaches every host through the bridge.
Each server runs its own leader-elected scheduler and controller manager.

While a client writes through all three servers, the first machine's server and etcd member are killed
(SIGKILL): every acknowledged write survives, the client carries on through the others, kubectl against
a survivor works, the `kubernetes` Service's endpoints drop the dead server, a Deployment made after the
kill gets its pods made, scheduled and running on the agent's node (the controller manager's and the
scheduler's leases fail over), and the agent, which talked to the dead server, keeps renewing its node
Lease through another one (its Node stays Ready).

The hosts, the bridge and every process are removed by fixture finalizers and the test's own `finally`,
whether it passes or fails. Needs root (network namespaces), nsenter, etcd and kubectl.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.etcd import EtcdCluster, etcd_cluster_running, requires_etcd
from tests.fixtures.polling import until

from pinnace.client import AlreadyExists, ApiError, Client
from pinnace.client.rest import ConnectionFailed

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.e2e, pytest.mark.root, requires_etcd,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network-namespace hosts need root"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="nsenter (util-linux) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
BRIDGE, CIDR = "pn-ha-hosts", "10.45.0.0/24"  # the test's own: never `pinnace up`'s pinnace-hosts/10.44.0.0/24
PORT = 6443  # every server on its own host, so all on the usual port
AGENT_NODE = "ha-agent"


@pytest.fixture
def hosts() -> Iterator[list]:
    """Four network-namespace hosts on the test's bridge: 1-3 the control plane machines, 4 a node."""
    from pinnace.cli.netns_hosts import HostNetwork, NetnsHost

    network = HostNetwork(bridge=BRIDGE, cidr=CIDR)
    made: list[NetnsHost] = []
    try:
        for index in range(1, 5):
            host = NetnsHost(network, f"pn-ha-h{index}", index)
            made.append(host)  # before create(): a half-made host is removed too
            host.create()
        yield made
    finally:
        for host in made:
            with contextlib.suppress(Exception):
                host.destroy()
        network.remove()


@pytest.fixture
def etcd_on_hosts(hosts) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster: member i inside host i, on that host's address (ports 2379/2380)."""
    machines = hosts[:3]
    with etcd_cluster_running(addresses=[h.address for h in machines],
                              commands=[h.command for h in machines]) as cluster:
        yield cluster


class HostProcess:
    """A pinnace command run inside a netns host, logging to `<data_dir>/<log_name>`."""

    def __init__(self, host, data_dir: Path, args: list[str], log_name: str) -> None:
        self.host, self.data_dir = host, data_dir
        self.log_path = data_dir / log_name
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # nsenter (without --fork) execs the command: the pid is pinnace's own, so SIGKILL reaches it.
            self.process = subprocess.Popen(host.command([sys.executable, "-m", "pinnace", *args]),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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


class ServerProcess(HostProcess):
    def __init__(self, host, data_dir: Path, store: str, ca_from: Path | None) -> None:
        self.address = host.address
        self.url = f"https://{host.address}:{PORT}"
        args = ["server", "--data-dir", str(data_dir), "--store", store,
                "--bind-address", host.address, "--port", str(PORT)]
        if ca_from is not None:
            args += ["--ca-from", str(ca_from)]
        super().__init__(host, data_dir, args, "server.log")

    async def wait_ready(self, timeout: float = 60) -> str:
        """Wait for the server to serve; the node join token it prints."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()[-3000:]
            found = re.search(r"node join token: (\S+)", self.log())
            if found:
                return found.group(1)
            await asyncio.sleep(0.1)
        raise AssertionError(f"server {self.url} not ready: {self.log()[-3000:]}")


async def test_three_servers_survive_losing_a_server_and_an_etcd_member(hosts, etcd_on_hosts, tmp_path):
    machines, node_host = hosts[:3], hosts[3]
    addresses = [h.address for h in machines]
    store = etcd_on_hosts.store_url("/pnha")
    assert store == "etcd://" + ",".join(f"{a}:2379" for a in addresses) + "/pnha"
    processes: list[HostProcess] = []
    clients: list[Client] = []
    try:
        # The first server makes the CA and tokens; the others take them with --ca-from. Started one after
        # another: the first start of a cluster writes its defaults, later ones find them.
        servers: list[ServerProcess] = []
        join_token = ""
        for i, host in enumerate(machines):
            server = ServerProcess(host, tmp_path / f"s{i}", store, tmp_path / "s0" if i else None)
            servers.append(server)
            processes.append(server)
            token = await server.wait_ready()
            join_token = join_token or token
        admin_token = (tmp_path / "s0" / "pki" / "admin.token").read_text().strip()
        ca = str(tmp_path / "s0" / "pki" / "ca.crt")
        client = Client(servers=[s.url for s in servers], token=admin_token, ca_file=ca, qps=None, max_retries=8)
        client.retry_base = 0.05
        survivor = Client(servers[1].url, token=admin_token, ca_file=ca, qps=None)
        clients += [client, survivor]

        # A node on a fourth host, joined with the token, told of every server; it starts on the first one,
        # the one that dies.
        agent = HostProcess(node_host, tmp_path / "agent", [
            "agent", "--server", ",".join(s.url for s in servers), "--token", join_token,
            "--node-name", AGENT_NODE, "--data-dir", str(tmp_path / "agent"), "--node-ip", node_host.address,
        ], "agent.log")
        processes.append(agent)

        async def endpoint_ips() -> list[str]:
            endpoints = await survivor.get("v1/endpoints", "kubernetes", namespace="default")
            return sorted(a["ip"] for s in endpoints.get("subsets") or () for a in s.get("addresses") or ())

        async def node_ready() -> bool:
            assert agent.process.poll() is None, agent.log()[-3000:]
            node = await survivor.get("v1/nodes", AGENT_NODE)
            conditions = (node.get("status") or {}).get("conditions") or ()
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        await until(lambda: _equal(endpoint_ips(), sorted(addresses)), 20, "every server in the kubernetes endpoints")
        await until(node_ready, 30, "the agent's node to register and be Ready")

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
        # The first machine's server and etcd member crash.
        servers[0].kill()
        etcd_on_hosts.members[0].kill()
        killed_at = datetime.datetime.now(datetime.UTC)
        at_kill = len(acknowledged)
        await until(lambda: _true(len(acknowledged) >= at_kill + 30), 45, "writes to continue after the failures")
        stop_writing.set()
        await writing
        assert client.server != servers[0].url

        stored = await survivor.list("v1/configmaps", namespace="default", label_selector="ha=1")
        names = {item["metadata"]["name"] for item in stored["items"]}
        lost = [name for name in acknowledged if name not in names]
        assert not lost, f"acknowledged writes lost: {lost}"

        # kubectl, from the root namespace, against a surviving server through its own admin kubeconfig.
        env = {**os.environ, "KUBECONFIG": str(tmp_path / "s1" / "kubeconfig.yaml"), "HOME": str(tmp_path)}

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)

        result = kubectl("get", "configmaps", "-l", "ha=1", "-o", "name")
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) == len(names)
        # The controllers' and the scheduler's leaders may have died with the first server: others take
        # their Leases over, the ReplicaSet's pods are made, bound to the agent's node, and run there.
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "after-failover"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "after-failover"}},
                     "template": {"metadata": {"labels": {"app": "after-failover"}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "120"]}]}}},
        }
        result = kubectl("apply", "-f", "-", stdin=json.dumps(deployment))
        assert result.returncode == 0, result.stderr

        async def deployment_running() -> bool:
            pods = (await survivor.list("v1/pods", namespace="default", label_selector="app=after-failover"))["items"]
            return len(pods) == 2 and all(
                p["spec"].get("nodeName") == AGENT_NODE and p.get("status", {}).get("phase") == "Running" for p in pods)

        await until(deployment_running, 60, "the Deployment's pods scheduled and running after the failover")
        await until(lambda: _equal(endpoint_ips(), sorted(addresses[1:])), 30, "the dead server out of the endpoints")
        result = kubectl("get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[*].addresses[*].ip}")
        assert sorted(result.stdout.split()) == sorted(addresses[1:]), result.stdout + result.stderr

        # The agent's server died under it: it renews its Lease through another, and its Node stays Ready.
        async def lease_renewed_after_kill() -> bool:
            assert agent.process.poll() is None, agent.log()[-3000:]
            lease = await survivor.get("coordination.k8s.io/v1/leases", AGENT_NODE, namespace="kube-node-lease")
            renewed = datetime.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
            return renewed > killed_at

        await until(lease_renewed_after_kill, 30, "the agent's Lease renewed through a surviving server")
        assert await node_ready(), "the agent's node is no longer Ready"

        # An agent leaves its pods running when it stops: delete them first, the agent confirms they are gone.
        result = kubectl("delete", "deployment", "after-failover")
        assert result.returncode == 0, result.stderr

        async def pods_gone() -> bool:
            pods = await survivor.list("v1/pods", namespace="default", label_selector="app=after-failover")
            return not pods["items"]

        await until(pods_gone, 60, "the Deployment's pods stopped by the agent and removed")
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        for process in reversed(processes):
            process.stop()


async def _equal(value, expected) -> bool:
    return (await value) == expected


async def _true(value: bool) -> bool:
    return value
