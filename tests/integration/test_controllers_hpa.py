"""HorizontalPodAutoscaler end to end: a real API server serving metrics.k8s.io from a kubelet stand-in's
`/stats/summary`, the controller manager, and kubectl."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl

import pytest
from aiohttp import web
from tests.integration.node_double import deployment, eventually, start_cluster, stop_cluster

from pinnace.apiserver import certs

pytestmark = pytest.mark.timeout(120)


class SummaryDouble:
    """The kubelet's `/stats/summary` over HTTPS for the node double's running pods. The pods of each
    `app` label share `load[app]` nanocores of CPU evenly, so scaling out lowers each pod's usage."""

    def __init__(self, nodes, tmp_path) -> None:
        self.nodes = nodes
        self.load: dict[str, int] = {}
        self.tmp_path = tmp_path
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def summary(self, request: web.Request) -> web.Response:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        running = [p for p in self.nodes.pods.list() if (p.get("status") or {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        pods = []
        for pod in running:
            app = (pod["metadata"].get("labels") or {}).get("app", "")
            share = self.load.get(app, 0) // max(1, sum(1 for p in running
                                                        if (p["metadata"].get("labels") or {}).get("app") == app))
            pods.append({"podRef": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                                    "uid": pod["metadata"]["uid"]},
                         "cpu": {"time": stamp, "usageNanoCores": share},
                         "containers": [{"name": c["name"], "cpu": {"time": stamp, "usageNanoCores": share},
                                         "memory": {"time": stamp, "workingSetBytes": 64 * 2**20}}
                                        for c in pod["spec"]["containers"]]})
        node = {"nodeName": "node", "cpu": {"time": stamp, "usageNanoCores": 10**9},
                "memory": {"time": stamp, "workingSetBytes": 2**30}}
        return web.json_response({"node": node, "pods": pods})

    async def start(self, client) -> None:
        ca_cert, ca_key = certs.make_ca(self.tmp_path)
        cert, key = certs.issue(ca_cert, ca_key, "kubelet", ip_addresses=("127.0.0.1",), server=True)
        (self.tmp_path / "kubelet.crt").write_bytes(cert)
        (self.tmp_path / "kubelet.key").write_bytes(key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tmp_path / "kubelet.crt", self.tmp_path / "kubelet.key")
        app = web.Application()
        app.router.add_get("/stats/summary", self.summary)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for name in self.nodes.names:
            await client.patch("v1/nodes", name, {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}}}},
                               patch_type="merge", subresource="status")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def cluster(client, tmp_path):
    cluster = await start_cluster(client, controllers=["replicaset", "deployment", "horizontalpodautoscaling"],
                                  horizontal_pod_autoscaler_sync_period=0.5,
                                  horizontal_pod_autoscaler_cpu_initialization_period=0.0)
    (tmp_path / "kubelet-double").mkdir()
    summaries = SummaryDouble(cluster.nodes, tmp_path / "kubelet-double")
    await summaries.start(client)
    cluster.summaries = summaries
    try:
        yield cluster
    finally:
        await summaries.stop()
        await stop_cluster(cluster)


def web_deployment(name: str, replicas: int, cpu: str | None = "500m") -> dict:
    body = deployment(name, replicas)
    if cpu:
        body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu}}
    return body


def hpa(name: str, target: str, utilization: int = 50, minimum: int = 1, maximum: int = 5) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": minimum, "maxReplicas": maximum,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": utilization}}}]}}


async def run(kubectl, *args: str) -> str:
    result = await asyncio.to_thread(kubectl, *args, timeout=60)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == type_), {})


async def test_scales_a_deployment_up_and_reports_status(cluster, kubectl):
    client = cluster.client
    cluster.summaries.load["web"] = 10**9  # one core over 2 pods requesting 500m: 100% against 50%
    await client.create("apps/v1/deployments", web_deployment("web", 2), namespace="default")
    await eventually(lambda: _running(cluster, "web", 2))
    await client.create("autoscaling/v2/horizontalpodautoscalers", hpa("web", "web"), namespace="default")

    async def scaled():
        d = await client.get("apps/v1/deployments", "web", namespace="default")
        return d["spec"]["replicas"] == 4
    await eventually(scaled)
    await eventually(lambda: _running(cluster, "web", 4))

    async def settled():  # the load spread over 4 pods: 250m of 500m, on target
        h = await client.get("autoscaling/v2/horizontalpodautoscalers", "web", namespace="default")
        current = ((h["status"].get("currentMetrics") or [{}])[0].get("resource") or {}).get("current") or {}
        return h if current.get("averageUtilization") == 50 else None
    status = (await eventually(settled))["status"]
    assert status["currentReplicas"] == 4 and status["desiredReplicas"] == 4 and status["lastScaleTime"]
    assert status["currentMetrics"][0]["resource"]["current"]["averageValue"] == "250m"
    assert condition({"status": status}, "AbleToScale")["status"] == "True"
    assert condition({"status": status}, "ScalingActive")["reason"] == "ValidMetricFound"
    assert condition({"status": status}, "ScalingLimited")["reason"] == "DesiredWithinRange"

    events = (await client.list("v1/events", namespace="default",
                                field_selector="involvedObject.name=web,involvedObject.kind=HorizontalPodAutoscaler"))["items"]
    assert any(e["reason"] == "SuccessfulRescale"
               and e["message"] == "New size: 4; reason: cpu resource utilization (percentage of request) above target"
               for e in events)
    out = await run(kubectl, "get", "hpa", "web")
    assert "TARGETS" in out.splitlines()[0]
    assert "cpu: 50%/50%" in out and "Deployment/web" in out
    v1 = await client.get("autoscaling/v1/horizontalpodautoscalers", "web", namespace="default")
    assert v1["status"]["currentCPUUtilizationPercentage"] == 50


async def test_kubectl_autoscale_creates_a_working_hpa(cluster, kubectl):
    client = cluster.client
    cluster.summaries.load["api"] = 3 * 10**8  # 300m over 1 pod requesting 200m: 150% against 50%
    await client.create("apps/v1/deployments", web_deployment("api", 1, cpu="200m"), namespace="default")
    await eventually(lambda: _running(cluster, "api", 1))
    await run(kubectl, "autoscale", "deployment", "api", "--cpu-percent=50", "--min=1", "--max=2")

    async def limited():
        h = await client.get("autoscaling/v2/horizontalpodautoscalers", "api", namespace="default")
        return h if condition(h, "ScalingLimited").get("reason") == "TooManyReplicas" else None
    limited_hpa = await eventually(limited)
    assert condition(limited_hpa, "ScalingLimited")["status"] == "True"
    assert (await client.get("apps/v1/deployments", "api", namespace="default"))["spec"]["replicas"] == 2


async def test_missing_requests_and_zero_replicas(cluster):
    client = cluster.client
    cluster.summaries.load["bare"] = 10**8
    await client.create("apps/v1/deployments", web_deployment("bare", 1, cpu=None), namespace="default")
    await eventually(lambda: _running(cluster, "bare", 1))
    await client.create("autoscaling/v2/horizontalpodautoscalers", hpa("bare", "bare"), namespace="default")

    async def failing():
        h = await client.get("autoscaling/v2/horizontalpodautoscalers", "bare", namespace="default")
        return h if condition(h, "ScalingActive").get("reason") == "FailedGetResourceMetric" else None
    active = condition(await eventually(failing), "ScalingActive")
    assert active["status"] == "False"
    assert "missing request for cpu in container main of Pod bare-" in active["message"]

    await client.patch("apps/v1/deployments", "bare", {"spec": {"replicas": 0}}, namespace="default", patch_type="merge")

    async def disabled():
        h = await client.get("autoscaling/v2/horizontalpodautoscalers", "bare", namespace="default")
        return h if condition(h, "ScalingActive").get("reason") == "ScalingDisabled" else None
    active = condition(await eventually(disabled), "ScalingActive")
    assert active["message"] == "scaling is disabled since the replica count of the target is zero"
    assert (await client.get("apps/v1/deployments", "bare", namespace="default"))["spec"]["replicas"] == 0


async def test_unsupported_metric_types_are_reported(cluster):
    client = cluster.client
    await client.create("apps/v1/deployments", web_deployment("custom", 1), namespace="default")
    body = hpa("custom", "custom")
    body["spec"]["metrics"] = [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                                         "target": {"type": "AverageValue", "averageValue": "10"}}}]
    await client.create("autoscaling/v2/horizontalpodautoscalers", body, namespace="default")

    async def failing():
        h = await client.get("autoscaling/v2/horizontalpodautoscalers", "custom", namespace="default")
        return h if condition(h, "ScalingActive").get("status") == "False" else None
    active = condition(await eventually(failing), "ScalingActive")
    assert active["reason"] == "FailedGetPodsMetric"
    assert "unable to get metric requests_per_second" in active["message"]
    assert "does not serve custom.metrics.k8s.io" in active["message"]


async def _running(cluster, app: str, count: int) -> bool:
    pods = [p for p in await cluster.pods(selector=f"app={app}") if not p["metadata"].get("deletionTimestamp")]
    return len(pods) == count and all((p.get("status") or {}).get("phase") == "Running" for p in pods)
