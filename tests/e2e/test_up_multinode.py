"""`pinnace up --nodes 3`: a Deployment spreads over three nodes behind one Service, traffic reaches
pods on every node, and when one node's agent stops its pods are re-created on the other nodes."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from pinnace.cli.up import Cluster, NodeTeardown

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces need root"),
    pytest.mark.skipif(not shutil.which("iptables-restore"), reason="iptables is not installed"),
    pytest.mark.timeout(240),
]

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


async def test_three_nodes_spread_serve_and_replace_a_lost_node(tmp_path: Path) -> None:
    args = argparse.Namespace(nodes=3, runtime="process", port=free_port(), bind_address=None,
                              proxy_mode="iptables", dns_port=free_port(), node_monitor_grace_period=4.0)
    cluster = Cluster(args, tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    try:
        await cluster.start()
        client = cluster.client
        nodes = (await client.list("v1/nodes"))["items"]
        assert len(nodes) == 3

        await client.create("apps/v1/deployments", deployment(6), "default")
        await client.create("v1/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "spread"},
            "spec": {"selector": {"app": "spread"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }, "default")

        async def six_ready():
            pods = await running_pods(client)
            return pods if len(pods) == 6 else None

        pods = await wait_for(six_ready, 90, "6 ready pods")
        assert {p["spec"]["nodeName"] for p in pods} == {n["metadata"]["name"] for n in nodes}

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

        await wait_for(answers_from_every_node, 30, "answers from pods on all 3 nodes")

        # Stop one node's agent only: its Lease goes stale, the node becomes unreachable, its pods are
        # evicted and their ReplicaSet re-creates them on the two nodes left.
        lost_name, lost_node = next((name, component) for name, component in cluster.stack
                                    if isinstance(component, NodeTeardown) and name.endswith("-3"))
        lost = lost_node.kubelet.node_name
        await lost_node.kubelet.stop(close_runtime=False, remove_pods=False)

        async def replaced():
            pods = await running_pods(client)
            if len(pods) == 6 and all(p["spec"]["nodeName"] != lost for p in pods):
                return pods
            return None

        pods = await wait_for(replaced, 120, f"pods of {lost_name} re-created elsewhere")
        assert len({p["spec"]["nodeName"] for p in pods}) == 2
        node = await client.get("v1/nodes", lost)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "Unknown"
        answers = {(await asyncio.to_thread(fetch, url)).split()[1] for _ in range(20)}
        assert lost not in answers
    finally:
        await cluster.stop()
