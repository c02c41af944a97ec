"""Scheduler throughput: pods/s, latency and CPU per 1,000 pods for three workloads, plus the API
server's bare binding rate in the same run.

    .venv/bin/python bench/scheduler.py --nodes 1000 --pods 10000

Prints one JSON line:
    {"nodes", "pods", "bind_per_s", "bind_isolated_per_s", "binder": {...},
     "plain" | "anti_affinity" | "spread": {"pods_per_s", "p50_ms", "p99_ms", "cpu_s_per_1000", "ratio_to_bind"}}

Each workload runs on a fresh API server (its own process, SQLite store in a temporary directory,
plain HTTP on loopback) with N Node objects and no node agents, and a fresh scheduler in its own
process, so the scheduler's CPU time is measured alone. The loader (this process) creates M pods and
watches them: throughput is M over the time from the first create to the last binding observed;
latency per pod is create request sent -> binding observed.

- plain: pods requesting 100m cpu / 128Mi memory.
- anti_affinity: pods in groups of 10 with required anti-affinity on kubernetes.io/hostname within
  their group.
- spread: one set of pods spread over 10 zones (maxSkew 1, DoNotSchedule).
- bind_per_s: the same run as `plain` (same loader, same creates racing the bindings, same watch,
  same clock from the first create to the last binding observed) with the scheduler replaced by a
  bare binder: a process that watches pods and POSTs pods/binding round-robin over the nodes, with as
  many bindings in flight as the scheduler allows itself, and nothing else (no cache, no plugins, no
  events). `ratio_to_bind` is therefore what the scheduler itself costs, like for like; `binder`
  holds the full measurement.
- bind_isolated_per_s: for reference, the API server's binding rate with nothing else happening
  (pods created beforehand and not counted, nobody watching). It is not comparable with a workload's
  pods/s, whose window also holds the M creates and their watch events.

Diagnostics (environment): BENCH_DEBUG=1 prints the pod creation rate and the API server's CPU time;
BENCH_PROFILE=FILE writes a cProfile of the scheduler process; BENCH_BINDINGS=N changes the bindings
in flight; SIGUSR1 to the scheduler process prints what it holds for pods still pending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

ZONES = 10
GROUP = 10
NAMESPACE = "bench"
IN_FLIGHT = 64


# ---------------------------------------------------------------------------------------------
# Child processes


async def serve_api(data_dir: str) -> None:
    from pinnace.apiserver.server import ApiServer, ServerConfig

    server = ApiServer(
        ServerConfig(
            data_dir=data_dir, port=0, bind_address="127.0.0.1", insecure_port=0, event_sweep_interval=3600
        )
    )
    await server.start()
    print(json.dumps({"url": server.insecure_url}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()


async def run_scheduler(url: str) -> None:
    from pinnace.client import Client
    from pinnace.scheduler.scheduler import Scheduler

    client = Client(url, qps=None)
    scheduler = Scheduler(client, {"leaderElection": {"leaderElect": False},
                                   "parallelBindings": int(os.environ.get("BENCH_BINDINGS", "64"))})
    if os.environ.get("NOEV"):
        scheduler.recorder.event = lambda *a: None
    await scheduler.start()
    await scheduler.ready.wait()
    print("ready", flush=True)

    def dump() -> None:
        # Debugging aid: what the scheduler holds for pods still pending.
        pending = [p for p in scheduler._pods.list() if not p["spec"].get("nodeName")]
        report = {"queue": scheduler.queue.pending(), "in_flight": len(scheduler.queue._in_flight),
                  "cache_pods": scheduler.cache.pod_count(), "informer": len(scheduler._pods),
                  "scheduled": scheduler.scheduled, "bind_errors": scheduler.bind_errors,
                  "failed": scheduler.failed_attempts, "background": len(scheduler._background),
                  "pending": [(p["metadata"]["name"], p["metadata"]["uid"] in scheduler.queue,
                               p["metadata"]["uid"] in scheduler.queue._in_flight,
                               scheduler.cache.get_pod(p["metadata"]["uid"]) is not None) for p in pending[:20]]}
        print(json.dumps(report), file=sys.stderr, flush=True)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await scheduler.stop()
    await client.close()


async def run_binder(url: str, nodes: int) -> None:
    """The baseline: bind every pending pod round-robin over the nodes, with no scheduling logic, no
    informer cache and no events, as many bindings in flight as the scheduler allows itself."""
    from pinnace.client import ApiError, Client
    from pinnace.client.rest import ConnectionFailed

    client = Client(url, qps=None)
    slots = asyncio.Semaphore(int(os.environ.get("BENCH_BINDINGS", "64")))
    tasks: set[asyncio.Task] = set()
    seen: set[str] = set()
    next_node = 0

    async def bind(name: str, uid: str, node_name: str) -> None:
        try:
            body = {"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
            await client.post_subresource("v1/pods", name, "binding", body, namespace=NAMESPACE)
        finally:
            slots.release()

    async def offer(obj: dict) -> None:
        nonlocal next_node
        if obj["spec"].get("nodeName") or obj["metadata"]["uid"] in seen:
            return
        seen.add(obj["metadata"]["uid"])
        await slots.acquire()  # the same back-pressure as the scheduler's binding slots
        task = asyncio.ensure_future(bind(obj["metadata"]["name"], obj["metadata"]["uid"],
                                          f"node-{next_node % nodes:05d}"))
        next_node += 1
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def follow(version: str) -> None:
        while True:
            try:
                async for event_type, obj in client.watch("v1/pods", namespace=NAMESPACE,
                                                          resource_version=version):
                    version = obj["metadata"]["resourceVersion"]
                    if event_type == "ADDED":
                        await offer(obj)
            except (ApiError, ConnectionFailed):
                listing = await client.list("v1/pods", namespace=NAMESPACE)
                version = listing["metadata"]["resourceVersion"]
                for obj in listing["items"]:
                    await offer(obj)

    listing = await client.list("v1/pods", namespace=NAMESPACE)
    follower = asyncio.ensure_future(follow(listing["metadata"]["resourceVersion"]))
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    follower.cancel()
    await asyncio.gather(follower, *tasks, return_exceptions=True)
    await client.close()


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, text=True
    )


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------
# Objects


def node(i: int) -> dict:
    name = f"node-{i:05d}"
    allocatable = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"zone-{i % ZONES}"},
        },
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(i: int, workload: str) -> dict:
    labels: dict[str, str] = {"bench": workload}
    spec: dict[str, Any] = {
        "containers": [
            {"name": "c", "image": "pause", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
        ]
    }
    if workload == "anti_affinity":
        labels["group"] = f"g{i // GROUP}"
        spec["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {"group": labels["group"]}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    elif workload == "spread":
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"bench": "spread"}},
            }
        ]
    elif workload == "none":
        spec["schedulerName"] = "nobody"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p-{i:06d}", "namespace": NAMESPACE, "labels": labels},
        "spec": spec,
    }


async def gather_limited(coros, limit: int) -> list:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def prepare(client, nodes: int) -> None:
    await client.create(
        "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    )

    async def add(i: int) -> None:
        created = await client.create("v1/nodes", node(i))
        if not (created.get("status") or {}).get("allocatable"):
            created["status"] = node(i)["status"]
            await client.update_status("v1/nodes", created)

    await gather_limited((add(i) for i in range(nodes)), 32)


# ---------------------------------------------------------------------------------------------
# Measurements


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_bind(url: str, nodes: int, pods: int) -> float:
    from pinnace.client import Client

    client = Client(url, qps=None)
    try:
        await prepare(client, nodes)
        t0 = time.perf_counter()
        await gather_limited((client.create("v1/pods", pod(i, "none")) for i in range(pods)), 32)
        if os.environ.get("BENCH_DEBUG"):
            print(f"create_per_s {pods / (time.perf_counter() - t0):.1f}", file=sys.stderr)

        async def bind(i: int) -> None:
            body = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": f"p-{i:06d}", "namespace": NAMESPACE},
                "target": {"apiVersion": "v1", "kind": "Node", "name": f"node-{i % nodes:05d}"},
            }
            await client.post_subresource("v1/pods", f"p-{i:06d}", "binding", body, namespace=NAMESPACE)

        started = time.perf_counter()
        await gather_limited((bind(i) for i in range(pods)), IN_FLIGHT)
        return pods / (time.perf_counter() - started)
    finally:
        await client.close()


async def measure_workload(
    url: str, nodes: int, pods: int, workload: str, scheduler: subprocess.Popen
) -> dict:
    from pinnace.client import ApiError, Client
    from pinnace.client.rest import ConnectionFailed

    client = Client(url, qps=None)
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    all_bound = asyncio.Event()
    try:
        listing = await client.list("v1/pods", namespace=NAMESPACE)
        version = listing["metadata"]["resourceVersion"]

        def seen(obj: dict) -> bool:
            if obj["spec"].get("nodeName"):
                name = obj["metadata"]["name"]
                if name not in bound:
                    bound[name] = time.perf_counter()
                    if len(bound) >= pods:
                        all_bound.set()
                        return True
            return False

        async def observe() -> None:
            nonlocal version
            while True:
                try:
                    async for event_type, obj in client.watch("v1/pods", namespace=NAMESPACE,
                                                              resource_version=version):
                        if event_type == "BOOKMARK":
                            version = obj["metadata"]["resourceVersion"]
                        elif event_type in ("ADDED", "MODIFIED"):
                            version = obj["metadata"]["resourceVersion"]
                            if seen(obj):
                                return
                except (ApiError, ConnectionFailed):
                    # A watch the server dropped (we were slow, or history expired): list and go on.
                    listing = await client.list("v1/pods", namespace=NAMESPACE)
                    version = listing["metadata"]["resourceVersion"]
                    for obj in listing["items"]:
                        if seen(obj):
                            return

        watcher = asyncio.ensure_future(observe())
        cpu = psutil.Process(scheduler.pid)
        cpu_before = sum(cpu.cpu_times()[:2])
        first = time.perf_counter()

        async def create(i: int) -> None:
            created[f"p-{i:06d}"] = time.perf_counter()
            await client.create("v1/pods", pod(i, workload))

        await gather_limited((create(i) for i in range(pods)), 32)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_bound.wait(), timeout=max(60.0, pods / 20))
        last = max(bound.values()) if bound else time.perf_counter()
        cpu_after = sum(cpu.cpu_times()[:2])
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        latencies = [(bound[n] - created[n]) * 1000 for n in bound if n in created]
        done = len(bound)
        return {
            "pods_per_s": round(done / (last - first), 1) if done else 0.0,
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "cpu_s_per_1000": round((cpu_after - cpu_before) / max(done, 1) * 1000, 3),
            **({"bound": done} if done < pods else {}),
        }
    finally:
        await client.close()


async def with_server(nodes: int, pods: int, workload: str | None, role: str = "scheduler") -> Any:
    with tempfile.TemporaryDirectory(prefix="pinnace-bench-") as data_dir:
        server = spawn("--role", "apiserver", "--data-dir", data_dir)
        scheduler = None
        try:
            url = json.loads(server.stdout.readline())["url"]
            if workload is None:
                return await measure_bind(url, nodes, pods)
            from pinnace.client import Client

            client = Client(url, qps=None)
            try:
                await prepare(client, nodes)
            finally:
                await client.close()
            scheduler = spawn("--role", role, "--server", url, "--nodes", str(nodes))
            line = await asyncio.get_running_loop().run_in_executor(None, scheduler.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"{role} did not start")
            server_cpu = psutil.Process(server.pid)
            before = sum(server_cpu.cpu_times()[:2])
            wall = time.perf_counter()
            measured = await measure_workload(url, nodes, pods, workload, scheduler)
            if os.environ.get("BENCH_DEBUG"):
                used = sum(server_cpu.cpu_times()[:2]) - before
                print(f"{role} {workload}: api server cpu {used:.1f}s over "
                      f"{time.perf_counter() - wall:.1f}s wall",
                      file=sys.stderr)
            return measured
        finally:
            if scheduler is not None:
                stop_process(scheduler)
            stop_process(server)


async def main(args: argparse.Namespace) -> None:
    isolated = await with_server(args.nodes, args.pods, None)
    baseline = await with_server(args.nodes, args.pods, "plain", role="binder")
    bind_per_s = baseline["pods_per_s"]
    result: dict[str, Any] = {"nodes": args.nodes, "pods": args.pods, "bind_per_s": round(bind_per_s, 1),
                              "bind_isolated_per_s": round(isolated, 1), "binder": baseline}
    for workload in args.workloads.split(","):
        measured = await with_server(args.nodes, args.pods, workload)
        measured["ratio_to_bind"] = round(measured["pods_per_s"] / bind_per_s, 2) if bind_per_s else 0.0
        result[workload] = measured
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--workloads", default="plain,anti_affinity,spread")
    parser.add_argument(
        "--role", choices=("bench", "apiserver", "scheduler", "binder"), default="bench",
        help=argparse.SUPPRESS
    )
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.role == "apiserver":
        asyncio.run(serve_api(parsed.data_dir))
    elif parsed.role == "binder":
        asyncio.run(run_binder(parsed.server, parsed.nodes))
    elif parsed.role == "scheduler":
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            cProfile.run("asyncio.run(run_scheduler(parsed.server))", os.environ["BENCH_PROFILE"])
        else:
            asyncio.run(run_scheduler(parsed.server))
    else:
        asyncio.run(main(parsed))
