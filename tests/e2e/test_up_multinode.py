"""`pinnace up --nodes 3` as root: the two extra nodes are hosts of their own (network namespaces at
10.44.0.x, one `pinnace agent` process each). A Deployment spreads over the three nodes behind one
Service; pods reach pods on other nodes by pod IP, and the Service from the machine, from a pod and
from a node host answers from pods on every node; when one node's agent is killed its pods are
re-created on the other nodes; stopping the cluster leaves no process, namespace, bridge or rule."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from pinnace.cli.netns_hosts import HostNetwork
from pinnace.cli.up import Cluster, HostNodes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces need root"),
    pytest.mark.skipif(not shutil.which("iptables-restore"), reason="iptables is not installed"),
    pytest.mark.skipif(not shutil.which("nsenter"), reason="nsenter is not installed"),
    pytest.mark.timeout(240),
]

# Run in a network namespace: GET `url` `times` times, print the answering nodes (one per line).
FETCH = (
    "import sys, urllib.request\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    try:\n"
    "        print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().split()[1])\n"
    "    except OSError:\n"
    "        print('-')\n"
)

SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (os.environ['POD'] + ' ' + os.environ['NODE']).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args): pass\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deployment(replicas: int) -> dict:
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    # Short NoExecute tolerations so an unreachable node's pods are evicted within seconds in this test.
    tolerations = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 2} for taint in ("unreachable", "not-ready")]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "spread"}},
            "template": {
                "metadata": {"labels": {"app": "spread"}},
                "spec": {
                    "tolerations": tolerations,
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "DoNotSchedule",
                                                   "labelSelector": {"matchLabels": {"app": "spread"}}}],
                    "containers": [{"name": "web", "image": "spread:v1", "env": env,
                                    "command": ["python3", "-c", SERVER],
                                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}],
                },
            },
        },
    }


async def running_pods(client) -> list[dict]:
    pods = (await client.list("v1/pods", "default", label_selector="app=spread"))["items"]
    return [p for p in pods if p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def fetch(url: str) -> str:
    return urllib.request.urlopen(url, timeout=3).read().decode()


async def nodes_answering(netns: str, url: str, times: int = 30) -> set[str]:
    """The nodes of the pods that answer `url` from network namespace `netns` (a pod's or a host's)."""
    result = await asyncio.to_thread(
        subprocess.run, ["nsenter", f"--net=/var/run/netns/{netns}", "--", sys.executable, "-c", FETCH, url, str(times)],
        capture_output=True, text=True, timeout=60)
    return set(result.stdout.split()) - {"-"}


async def answered_by(netns: str, url: str, nodes: set[str], times: int = 30) -> bool:
    return await nodes_answering(netns, url, times) == nodes


def pod_sandboxes(data_dir: Path) -> dict[str, str]:
    """pod IP -> the pod's network namespace, from every node's process runtime records."""
    sandboxes = {}
    for path in data_dir.glob("nodes/*/runtime/sandboxes/*.json"):
        record = json.loads(path.read_text())
        if record.get("ip") and record.get("netns"):
            sandboxes[record["ip"]] = record["netns"]
    return sandboxes


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_three_nodes_are_hosts_that_spread_serve_and_replace_a_lost_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    args = argparse.Namespace(nodes=3, runtime="process", port=free_port(), bind_address=None,
                              proxy_mode="iptables", dns_port=free_port(), node_monitor_grace_period=4.0)
    cluster = Cluster(args, data_dir)
    data_dir.mkdir()
    hosts: HostNodes | None = None
    netns_seen: set[str] = set()
    try:
        await cluster.start()
        client = cluster.client
        hosts = next(component for _, component in cluster.stack if isinstance(component, HostNodes))
        nodes = (await client.list("v1/nodes"))["items"]
        assert len(nodes) == 3
        addresses = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
                     for n in nodes}
        # The machine is 10.44.0.1 (the first node); each extra node is a host of its own at 10.44.0.x.
        assert addresses[cluster.node_name(0)] == "10.44.0.1"
        assert len(set(addresses.values())) == 3 and all(a.startswith("10.44.0.") for a in addresses.values())
        host_of = {name: host.name for name, _, host in hosts.nodes}
        assert set(host_of) == set(addresses) - {cluster.node_name(0)}
        netns_seen.update(host_of.values())

        await client.create("apps/v1/deployments", deployment(6), "default")
        await client.create("v1/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "spread"},
            "spec": {"selector": {"app": "spread"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }, "default")

        async def six_ready():
            pods = await running_pods(client)
            return pods if len(pods) == 6 else None

        pods = await wait_for(six_ready, 60, "6 ready pods")
        assert {p["spec"]["nodeName"] for p in pods} == set(addresses)

        # Pod to pod across nodes, by pod IP: from one pod on each node to one pod on every other node.
        sandboxes = pod_sandboxes(data_dir)
        netns_seen.update(sandboxes.values())
        one_per_node = {p["spec"]["nodeName"]: p["status"]["podIP"] for p in pods}
        for source_node, source_ip in one_per_node.items():
            for target_node, target_ip in one_per_node.items():
                if target_node != source_node:
                    await wait_for(partial(answered_by, sandboxes[source_ip], f"http://{target_ip}:8080/", {target_node}, 1),
                                   20, f"pod {source_ip} on {source_node} reaching pod {target_ip} on {target_node}")

        service = await client.get("v1/services", "spread", "default")
        url = f"http://{service['spec']['clusterIP']}/"

        async def answers_from_every_node():
            seen = set()
            for _ in range(60):
                try:
                    seen.add((await asyncio.to_thread(fetch, url)).split()[1])
                except OSError:
                    pass
            return seen if len(seen) == 3 else None

        # The Service from the machine, from a pod on an extra node and from an extra node's host.
        await wait_for(answers_from_every_node, 30, "answers from pods on all 3 nodes")
        extra = cluster.node_name(1)
        await wait_for(partial(answered_by, sandboxes[one_per_node[extra]], url, set(addresses)), 30,
                       f"the Service answering a pod on {extra} from all 3 nodes")
        await wait_for(partial(answered_by, host_of[cluster.node_name(2)], url, set(addresses)), 30,
                       f"the Service answering the host of {cluster.node_name(2)} from all 3 nodes")

        # Kill one node's agent: its Lease goes stale, the node becomes unreachable, its pods are evicted
        # and their ReplicaSet re-creates them on the two nodes left.
        lost = cluster.node_name(2)
        os.kill(hosts.processes[lost].pid, signal.SIGKILL)

        async def replaced():
            pods = await running_pods(client)
            if len(pods) == 6 and all(p["spec"]["nodeName"] != lost for p in pods):
                return pods
            return None

        pods = await wait_for(replaced, 60, f"pods of {lost} re-created elsewhere")
        assert len({p["spec"]["nodeName"] for p in pods}) == 2
        node = await client.get("v1/nodes", lost)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "Unknown"
        answers = {(await asyncio.to_thread(fetch, url)).split()[1] for _ in range(20)}
        assert lost not in answers
        netns_seen.update(pod_sandboxes(data_dir).values())
    finally:
        await cluster.stop()
    # Nothing of the cluster is left: agents, pods, their namespaces, the hosts, the bridge, the rules.
    assert hosts is not None
    assert not [name for name, process in hosts.processes.items() if alive(process.pid)]
    left = set(os.listdir("/var/run/netns")) & netns_seen if os.path.isdir("/var/run/netns") else set()
    assert not left, f"network namespaces left: {left}"
    assert not await asyncio.to_thread(HostNetwork().exists)  # pyroute2 is synchronous: not on the loop
    assert not list(data_dir.glob("nodes/*/runtime/sandboxes/*.json"))
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "PINNACE" not in rules
