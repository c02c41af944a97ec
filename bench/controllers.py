"""Benchmark: the controllers at 1,000 pods, and how fast Service endpoints follow readiness.

A real pinnace API server runs in a child process (its own CPU, as in a real control plane); the
controller manager and a node double (tests/integration/node_double.py: binds pods, reports them Running
and Ready) run here, on one client without client-side rate limiting.

- `create_per_s`: the API server's bare pod create rate (64 concurrent creates from one client), the
  mean of a run before and a run after the controller measurements;
- `scale_pods_per_s`: pods created per second when a Deployment is scaled 0 -> 1,000 (until all 1,000
  exist), and `scale_ratio_to_create` (target >= 0.6);
- `rollout_1000_s`: seconds for a rolling update (default 25% surge / 25% unavailable) of those 1,000
  replicas, the node double making every new pod ready;
- `endpoints_p50_ms` / `endpoints_p99_ms`: from a pod turning Ready (the status write being sent) to its
  Service's EndpointSlice listing it ready, one pod at a time, for a Service with 250 endpoints.

Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.node_double import NodeDouble

from pinnace.client import Client
from pinnace.controllers.manager import ControllerManager

REPLICAS = int(os.environ.get("BENCH_REPLICAS", "1000"))  # smaller for a smoke run
ENDPOINTS = 250

SERVER = """
import asyncio, sys
from pinnace.apiserver.server import ApiServer, ServerConfig

async def main():
    server = ApiServer(ServerConfig(data_dir=sys.argv[1], port=0, bind_address="127.0.0.1", event_sweep_interval=3600))
    await server.start()
    print(server.kubeconfig_path, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", SERVER, data_dir], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip() if process.stdout else ""
    if not line:
        process.kill()
        raise SystemExit("the API server did not start")
    return process, line


def pod(name: str, labels: dict[str, str], node: str | None = None) -> dict:
    spec: dict = {
        "containers": [
            {
                "name": "c",
                "image": "bench",
                "command": ["sleep", "1d"],
                "ports": [{"name": "http", "containerPort": 8080}],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


async def bare_create_rate(client: Client, namespace: str, count: int = REPLICAS) -> float:
    await client.create(
        "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    limit = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with limit:
            # Bound to a node nobody runs, so nothing else touches these pods.
            await client.create(
                "v1/pods", pod(f"bare-{i}", {"bench": "bare"}, node="nowhere"), namespace=namespace
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def wait_for(check, timeout: float = 120.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise TimeoutError("benchmark step did not finish in time")


def deployment(replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "bench:1", "command": ["sleep", "1d"]}]},
            },
        },
    }


async def rolled_out(client: Client, replicas: int) -> bool:
    d = await client.get("apps/v1/deployments", "bench", namespace="default")
    s = d.get("status") or {}
    return (
        s.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and s.get("updatedReplicas") == replicas
        and s.get("availableReplicas") == replicas
        and s.get("replicas") == replicas
    )


async def scale_and_rollout(client: Client, manager: ControllerManager) -> tuple[float, float]:
    await client.create("apps/v1/deployments", deployment(0), namespace="default")
    await wait_for(lambda: rolled_out(client, 0))
    pods = manager.factory.informer("v1/pods")  # the manager's own cache: counting costs no requests

    def created() -> int:
        return sum(
            1 for p in pods.list("default") if (p["metadata"].get("labels") or {}).get("app") == "bench"
        )

    started = time.perf_counter()
    await client.patch(
        "apps/v1/deployments",
        "bench",
        {"spec": {"replicas": REPLICAS}},
        namespace="default",
        subresource="scale",
    )
    await wait_for(lambda: _at_least(created, REPLICAS), interval=0.01)
    scale_rate = REPLICAS / (time.perf_counter() - started)

    nodes = await NodeDouble(client, ("bench-1", "bench-2", "bench-3"), workers=16).start()
    try:
        await wait_for(lambda: rolled_out(client, REPLICAS), timeout=300)
        started = time.perf_counter()
        await client.patch(
            "apps/v1/deployments",
            "bench",
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "bench:2"}]}}}},
            namespace="default",
            patch_type="strategic",
        )
        await wait_for(lambda: rolled_out(client, REPLICAS), timeout=300)
        rollout = time.perf_counter() - started
    finally:
        await nodes.close()
    return scale_rate, rollout


async def _at_least(count, wanted: int) -> bool:
    return count() >= wanted


async def endpoint_latency(client: Client) -> list[float]:
    await client.create(
        "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "svc"}}
    )
    labels = {"app": "svc"}
    limit = asyncio.Semaphore(32)
    stamp = "2026-01-01T00:00:00Z"

    async def make(i: int) -> None:
        async with limit:
            await client.create("v1/pods", pod(f"ep-{i}", labels, node="nowhere"), namespace="svc")
            status = {
                "phase": "Running",
                "podIP": f"10.42.200.{i}" if i < 250 else f"10.42.201.{i - 250}",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": stamp}],
            }
            await client.patch(
                "v1/pods", f"ep-{i}", {"status": status}, namespace="svc", subresource="status"
            )

    await asyncio.gather(*(make(i) for i in range(ENDPOINTS)))
    await client.create(
        "v1/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
        namespace="svc",
    )
    ready_at: dict[str, float] = {}
    seen: dict[str, float] = {}
    listing = await client.list("discovery.k8s.io/v1/endpointslices", namespace="svc")

    async def watch() -> None:
        async for _, slice_ in client.watch(
            "discovery.k8s.io/v1/endpointslices",
            namespace="svc",
            resource_version=listing["metadata"]["resourceVersion"],
        ):
            now = time.perf_counter()
            for endpoint in slice_.get("endpoints") or ():
                ip = endpoint["addresses"][0]
                if (endpoint.get("conditions") or {}).get("ready") and ip in ready_at and ip not in seen:
                    seen[ip] = now

    watcher = asyncio.create_task(watch())
    try:
        await wait_for(lambda: _slices_hold(client, ENDPOINTS))
        for i in range(ENDPOINTS):
            ip = f"10.42.200.{i}" if i < 250 else f"10.42.201.{i - 250}"
            ready_at[ip] = time.perf_counter()
            await client.patch(
                "v1/pods",
                f"ep-{i}",
                {
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]
                    }
                },
                namespace="svc",
                subresource="status",
            )
            await asyncio.sleep(0.01)
        await wait_for(lambda: _all_seen(seen, ENDPOINTS), timeout=30)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return [(seen[ip] - ready_at[ip]) * 1000 for ip in ready_at]


async def _slices_hold(client: Client, count: int) -> bool:
    slices = (await client.list("discovery.k8s.io/v1/endpointslices", namespace="svc"))["items"]
    return sum(len(s.get("endpoints") or ()) for s in slices) >= count


async def _all_seen(seen: dict, count: int) -> bool:
    return len(seen) >= count


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pinnace-bench-") as data_dir:
        process, kubeconfig = start_server(data_dir)
        client = await Client.from_kubeconfig(kubeconfig, qps=None)
        manager = ControllerManager(
            client, controllers=["replicaset", "deployment", "endpointslice"], leader_elect=False
        )
        try:
            before = await bare_create_rate(client, "bare-before")
            await manager.start()
            await manager.wait_running(timeout=60)
            scale_rate, rollout = await scale_and_rollout(client, manager)
            # Measured before and after the controllers' runs: on a shared machine the server's speed drifts.
            create_rate = (before + await bare_create_rate(client, "bare-after")) / 2
            latencies = await endpoint_latency(client)
        finally:
            await manager.stop()
            await client.close()
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
    print(
        json.dumps(
            {
                "create_per_s": round(create_rate, 1),
                "scale_pods_per_s": round(scale_rate, 1),
                "scale_ratio_to_create": round(scale_rate / create_rate, 2),
                "rollout_1000_s": round(rollout, 2),
                "endpoints_p50_ms": round(statistics.median(latencies), 1),
                "endpoints_p99_ms": round(percentile(latencies, 0.99), 1),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
