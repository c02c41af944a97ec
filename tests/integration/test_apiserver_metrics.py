"""metrics.k8s.io served by the API server from the kubelets' `/stats/summary`: kubectl top, pinnace top."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import aiohttp
import pytest
from tests.conftest import kubectl_path

from pinnace.kubelet.agent import Kubelet
from pinnace.kubelet.testing import (
    PY,
    condition,
    container,
    free_port,
    kubelet_config,
    pod,
    stop_and_clean,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@pytest.fixture
def run(kubeconfig, tmp_path):
    """A command as an asyncio subprocess: the node agent under test runs on this test's event loop."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    async def run(*command: str, timeout: float = 60) -> tuple[int, str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        return process.returncode or 0, out.decode(), err.decode()

    return run


@pytest.fixture
def kubectl_top(run, kubeconfig, tmp_path):
    async def top(*args: str) -> tuple[int, str, str]:
        return await run(kubectl_path(), f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", "top", *args)

    return top


@pytest.fixture
async def kubelet(client, tmp_path):
    instance = Kubelet(client, kubelet_config(tmp_path / "node"))
    await instance.start()
    try:
        yield instance
    finally:
        await stop_and_clean(instance)


@pytest.fixture
async def http(api_server):
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as session:
        yield session


async def busy_pod(client, kubelet, name: str) -> dict:
    spin = "import time\nwhile True:\n    sum(range(20000)); time.sleep(0.01)"
    await client.create("v1/pods", pod(name, [container("spin", PY, "-c", spin)], nodeName=kubelet.node_name))
    return await wait_for(client, name, lambda p: p["status"].get("phase") == "Running" and condition(p, "Ready") == "True")


async def test_kubectl_top_nodes_and_pods(client, kubelet, kubectl_top, run, kubeconfig):
    await busy_pod(client, kubelet, "spinner")

    code, out, err = await kubectl_top("nodes")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    row = next(r.split() for r in rows if r.startswith(kubelet.node_name))
    assert re.fullmatch(r"\d+m", row[1]) and re.fullmatch(r"\d+Mi", row[3])

    code, out, err = await kubectl_top("pods")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    row = next(line.split() for line in out.splitlines() if line.startswith("spinner"))
    assert re.fullmatch(r"\d+m", row[1]) and re.fullmatch(r"\d+Mi", row[2])

    code, out, err = await kubectl_top("pods", "-A", "--containers")
    assert code == 0, err
    assert any(line.split()[:3] == ["default", "spinner", "spin"] for line in out.splitlines())

    code, out, err = await run(sys.executable, "-m", "pinnace.cli.main", "top", "pods", f"--kubeconfig={kubeconfig}")
    if code != 0 and "No module named" in err:
        code, out, err = await run(os.path.join(os.path.dirname(sys.executable), "pinnace"), "top", "pods",
                                   f"--kubeconfig={kubeconfig}")
    assert code == 0, err
    assert any(line.startswith("spinner") for line in out.splitlines())


async def test_metrics_objects_carry_usage_timestamp_and_window(client, kubelet, http):
    await busy_pod(client, kubelet, "spinner")
    async with http.get(f"/apis/metrics.k8s.io/v1beta1/nodes/{kubelet.node_name}") as response:
        assert response.status == 200
        node = await response.json()
    assert node["kind"] == "NodeMetrics" and node["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert re.fullmatch(r"\d+n", node["usage"]["cpu"]) and re.fullmatch(r"\d+Ki", node["usage"]["memory"])
    assert node["timestamp"].endswith("Z") and re.fullmatch(r"[\d.]+s", node["window"])

    async with http.get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spinner") as response:
        assert response.status == 200
        metrics = await response.json()
    assert metrics["kind"] == "PodMetrics" and metrics["metadata"]["namespace"] == "default"
    (spin,) = metrics["containers"]
    assert spin["name"] == "spin" and int(spin["usage"]["cpu"][:-1]) > 0
    assert re.fullmatch(r"\d+Ki", spin["usage"]["memory"])

    async with http.get("/apis/metrics.k8s.io/v1beta1/pods") as response:
        listed = await response.json()
    assert listed["kind"] == "PodMetricsList"
    assert [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in listed["items"]] == [("default", "spinner")]
    async with http.get("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods") as response:
        assert (await response.json())["items"] == []
    async with http.get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/absent") as response:
        assert response.status == 404


async def test_metrics_group_in_legacy_and_aggregated_discovery(http):
    async with http.get("/apis", headers={"Accept": AGGREGATED}) as response:
        body = await response.json(content_type=None)
    (group,) = [g for g in body["items"] if g["metadata"].get("name") == "metrics.k8s.io"]
    resources = {r["resource"]: r for r in group["versions"][0]["resources"]}
    assert group["versions"][0]["version"] == "v1beta1"
    assert resources["nodes"]["scope"] == "Cluster" and resources["pods"]["scope"] == "Namespaced"
    assert resources["pods"]["verbs"] == ["get", "list"]
    assert resources["nodes"]["responseKind"]["kind"] == "NodeMetrics"

    async with http.get("/apis/metrics.k8s.io/v1beta1") as response:
        listed = await response.json()
    assert {r["name"]: r["kind"] for r in listed["resources"]} == {"nodes": "NodeMetrics", "pods": "PodMetrics"}
    async with http.get("/apis") as response:
        assert "metrics.k8s.io" in {g["name"] for g in (await response.json())["groups"]}


async def test_unreachable_kubelet_answers_503(client, http):
    closed_port = free_port()
    await client.create("v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "gone"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": closed_port}}},
    })
    for path in ("/apis/metrics.k8s.io/v1beta1/nodes/gone", "/apis/metrics.k8s.io/v1beta1/nodes"):
        async with http.get(path) as response:
            assert response.status == 503
            status = await response.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable"
        assert "unable to fetch metrics from node gone" in status["message"]
    async with http.post("/apis/metrics.k8s.io/v1beta1/nodes", json={}) as response:
        assert response.status == 405
