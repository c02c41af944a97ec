"""Endpoints and EndpointSlices follow the pods behind each Service."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.integration.node_double import Cluster, eventually, start_cluster, stop_cluster


@pytest.fixture
async def cluster(client):
    cluster = await start_cluster(client, controllers=["replicaset", "endpoints", "endpointslice"])
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


def replica_set(name: str, labels: dict, replicas: int = 2, ports: list | None = None) -> dict:
    container = {"name": "c", "image": "x", "ports": ports or [{"name": "http", "containerPort": 8080}]}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}


async def ips_of(cluster: Cluster, selector: str) -> set[str]:
    return {p["status"]["podIP"] for p in await cluster.pods(selector=selector) if (p.get("status") or {}).get("podIP")}


async def endpoint_ips(cluster: Cluster, name: str) -> tuple[set[str], set[str], list]:
    ep = await cluster.client.get("v1/endpoints", name, namespace="default")
    ready, not_ready, ports = set(), set(), []
    for subset in ep.get("subsets") or ():
        ready |= {a["ip"] for a in subset.get("addresses") or ()}
        not_ready |= {a["ip"] for a in subset.get("notReadyAddresses") or ()}
        ports = subset.get("ports") or ports
    return ready, not_ready, ports


async def slice_ips(cluster: Cluster, name: str) -> dict[str, dict]:
    slices = (await cluster.client.list("discovery.k8s.io/v1/endpointslices", namespace="default",
                                        label_selector=f"kubernetes.io/service-name={name}"))["items"]
    return {e["addresses"][0]: e["conditions"] for s in slices for e in s.get("endpoints") or ()}


async def test_endpoints_follow_pods_and_selector_changes(cluster: Cluster):
    client = cluster.client
    await client.create("apps/v1/replicasets", replica_set("blue", {"app": "web", "version": "blue"}), namespace="default")
    await client.create("apps/v1/replicasets", replica_set("green", {"app": "web", "version": "green"}), namespace="default")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web", "version": "blue"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    await client.create("v1/services", service, namespace="default")

    async def blue_ready():
        blue = await ips_of(cluster, "version=blue")
        ready, _, ports = await endpoint_ips(cluster, "web")
        slices = await slice_ips(cluster, "web")
        return len(blue) == 2 and ready == blue and ports == [{"name": "http", "port": 8080, "protocol": "TCP"}] and (
            set(slices) == blue and all(c["ready"] for c in slices.values()))
    await eventually(blue_ready)
    green = await eventually(lambda: _two(ips_of(cluster, "version=green")))

    # Switching versions: the endpoints follow within a second.
    started = time.monotonic()
    await client.patch("v1/services", "web", {"spec": {"selector": {"app": "web", "version": "green"}}},
                       namespace="default")

    async def switched():
        ready, _, _ = await endpoint_ips(cluster, "web")
        return ready == green and set(await slice_ips(cluster, "web")) == green
    await eventually(switched, timeout=5, interval=0.02)
    assert time.monotonic() - started < 1.0

    # A pod that stops being ready moves to notReadyAddresses (and ready=false in its slice).
    pod = next(p for p in await cluster.pods(selector="version=green"))
    conditions = [{**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
                  for c in pod["status"]["conditions"]]
    await client.patch("v1/pods", pod["metadata"]["name"], {"status": {"conditions": conditions}},
                       namespace="default", subresource="status")

    async def moved():
        ready, not_ready, _ = await endpoint_ips(cluster, "web")
        slices = await slice_ips(cluster, "web")
        ip = pod["status"]["podIP"]
        return ip in not_ready and ip not in ready and slices[ip]["ready"] is False
    await eventually(moved)

    # A Service without a selector is left to its user.
    manual = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
              "spec": {"ports": [{"port": 5432}]}}
    await client.create("v1/services", manual, namespace="default")
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
                 "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}
    await client.create("v1/endpoints", endpoints, namespace="default")
    await client.patch("v1/services", "external", {"metadata": {"labels": {"touched": "yes"}}}, namespace="default")
    await asyncio.sleep(0.5)
    current = await client.get("v1/endpoints", "external", namespace="default")
    assert current["subsets"][0]["addresses"][0]["ip"] == "192.0.2.10"


async def _two(coro):
    ips = await coro
    return ips if len(ips) == 2 else None


async def test_publish_not_ready_addresses(cluster: Cluster):
    client = cluster.client
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lonely", "labels": {"app": "db"}},
           "spec": {"containers": [{"name": "c", "image": "x"}]}}
    cluster.nodes.bind = False  # stays Pending without an IP: not an endpoint at all
    await client.create("v1/pods", pod, namespace="default")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
               "spec": {"selector": {"app": "db"}, "clusterIP": "None", "publishNotReadyAddresses": True,
                        "ports": [{"port": 5432}]}}
    await client.create("v1/services", service, namespace="default")
    await eventually(lambda: client.get("v1/endpoints", "db", namespace="default"))
    await client.patch("v1/pods", "lonely", {"status": {"podIP": "10.42.9.9", "phase": "Running"}},
                       namespace="default", subresource="status")

    async def published():
        ready, not_ready, _ = await endpoint_ips(cluster, "db")
        return ready == {"10.42.9.9"} and not not_ready
    await eventually(published)
    endpoints = await client.get("v1/endpoints", "db", namespace="default")
    assert endpoints["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


async def test_kubernetes_service_endpoints_stay_the_api_servers(cluster: Cluster):
    client = cluster.client
    before = await client.get("v1/endpoints", "kubernetes", namespace="default")
    await client.patch("v1/services", "kubernetes", {"metadata": {"labels": {"poke": "1"}}}, namespace="default")
    await asyncio.sleep(0.5)
    after = await client.get("v1/endpoints", "kubernetes", namespace="default")
    assert after["subsets"] == before["subsets"] and after["subsets"]
    slices = (await client.list("discovery.k8s.io/v1/endpointslices", namespace="default",
                                label_selector="kubernetes.io/service-name=kubernetes"))["items"]
    assert [s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] for s in slices] == ["kube-apiserver"]
