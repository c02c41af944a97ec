"""API server benchmark: prints one JSON line.

Runs `pinnace server` as a separate process (its own core) on a fresh data dir and drives it over
HTTP on its loopback plain-HTTP listener with aiohttp clients from this process:
- pod creates at 1, 16 and 64 concurrent clients (per second, p50 and p99 latency in ms);
- pod gets at 1, 16 and 64 clients;
- listing a namespace of 1,000 pods (mean ms per list, and lists per second);
- watch fan-out: events per second delivered to 100 watchers while pods are created;
- in the same run, the store's bare create rate (SQLite, 64 concurrent creates of the same pod JSON in
  this process, and one at a time) and the ratios of the API server's create rates to them.

Usage: python bench/apiserver.py [--seconds 3]
"""

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
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent


def pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "env": [{"name": "MODE", "value": "bench"}],
                }
            ]
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_clients(clients: int, seconds: float, operation) -> tuple[float, list[float]]:
    """Run `operation(worker, i)` in `clients` loops for `seconds`; returns (ops/s, latencies ms)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = [0]

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            counter[0] += 1
            started = time.perf_counter()
            await operation(index, counter[0])
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def store_create_rate(seconds: float, clients: int = 64) -> float:
    sys.path.insert(0, str(ROOT / "src"))
    from pinnace.store import open_store

    directory = tempfile.mkdtemp(prefix="pinnace-bench-store-")
    store = open_store("sqlite", directory)
    await store.start()
    body = orjson.dumps(pod("x"))
    try:

        async def create(_worker: int, i: int) -> None:
            await store.create(f"/registry/pods/bench/p{i}", body)

        rate, _ = await run_clients(clients, seconds, create)
    finally:
        await store.close()
        shutil.rmtree(directory, ignore_errors=True)
    return rate


async def main(seconds: float) -> dict:
    result: dict[str, float] = {}
    result["store_create_per_s"] = round(await store_create_rate(seconds), 1)
    result["store_create_per_s_1"] = round(await store_create_rate(seconds, clients=1), 1)

    data_dir = tempfile.mkdtemp(prefix="pinnace-bench-")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "server", "--data-dir", data_dir, "--port", str(free_port()),
        "--bind-address", "127.0.0.1", "--insecure-port", str(port),
        "--no-controllers",  # the API server alone: no scheduler or controllers writing back
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=200)
    try:
        async with aiohttp.ClientSession(base_url=base, connector=connector) as http:
            for _ in range(200):
                try:
                    async with http.get("/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            for namespace in ("bench", "bench-list", "bench-watch"):
                async with http.post(
                    "/api/v1/namespaces", json={"metadata": {"name": namespace}}
                ) as response:
                    assert response.status == 201, await response.text()
            headers = {"Content-Type": "application/json"}
            names: list[str] = []

            for clients in (1, 16, 64):

                async def create(worker: int, i: int, clients: int = clients) -> None:
                    name = f"c{clients}-{i}"
                    async with http.post(
                        "/api/v1/namespaces/bench/pods", data=orjson.dumps(pod(name)), headers=headers
                    ) as r:
                        await r.read()
                        if r.status != 201:
                            raise RuntimeError(f"create answered {r.status}: {await r.text()}")
                    names.append(name)

                rate, latencies = await run_clients(clients, seconds, create)
                result[f"create_per_s_{clients}"] = round(rate, 1)
                result[f"create_p50_ms_{clients}"] = round(percentile(latencies, 0.5), 2)
                result[f"create_p99_ms_{clients}"] = round(percentile(latencies, 0.99), 2)

            for clients in (1, 16, 64):

                async def get(worker: int, i: int) -> None:
                    async with http.get(f"/api/v1/namespaces/bench/pods/{names[i % len(names)]}") as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"get answered {r.status}")

                rate, latencies = await run_clients(clients, seconds, get)
                result[f"get_per_s_{clients}"] = round(rate, 1)
                result[f"get_p50_ms_{clients}"] = round(percentile(latencies, 0.5), 2)
                result[f"get_p99_ms_{clients}"] = round(percentile(latencies, 0.99), 2)
            result["get_per_s"] = max(result["get_per_s_1"], result["get_per_s_16"], result["get_per_s_64"])

            counter = iter(range(1000))

            async def fill(worker: int, i: int) -> None:
                index = next(counter, None)
                if index is None:
                    return
                async with http.post(
                    "/api/v1/namespaces/bench-list/pods", data=orjson.dumps(pod(f"l{index}")), headers=headers
                ) as r:
                    await r.read()

            await asyncio.gather(*(fill(0, 0) for _ in range(16)))
            while True:
                batch = [fill(0, 0) for _ in range(64)]
                await asyncio.gather(*batch)
                async with http.get("/api/v1/namespaces/bench-list/pods?limit=1") as r:
                    if (await r.json())["metadata"].get("remainingItemCount", 0) >= 999:
                        break
            timings = []
            for _ in range(10):
                started = time.perf_counter()
                async with http.get("/api/v1/namespaces/bench-list/pods") as r:
                    body = await r.read()
                timings.append((time.perf_counter() - started) * 1000)
            assert len(orjson.loads(body)["items"]) == 1000
            result["list_1000_ms"] = round(sum(timings) / len(timings), 2)
            result["list_1000_p50_ms"] = round(percentile(timings, 0.5), 2)
            result["lists_1000_per_s"] = round(1000 / result["list_1000_ms"], 1)

            watchers, events_per_watcher = 100, 200
            received = [0] * watchers
            done = asyncio.Event()
            ready = [0]

            async def watch(index: int) -> None:
                async with http.get(
                    "/api/v1/namespaces/bench-watch/pods?watch=true&resourceVersion=0&timeoutSeconds=60"
                ) as r:
                    ready[0] += 1
                    async for line in r.content:
                        if line.strip():
                            received[index] += 1
                            if received[index] >= events_per_watcher:
                                if all(count >= events_per_watcher for count in received):
                                    done.set()
                                return

            tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
            while ready[0] < watchers:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            watch_counter = iter(range(events_per_watcher))

            async def feed() -> None:
                for index in watch_counter:
                    async with http.post(
                        "/api/v1/namespaces/bench-watch/pods",
                        data=orjson.dumps(pod(f"w{index}")),
                        headers=headers,
                    ) as r:
                        await r.read()

            await asyncio.gather(*(feed() for _ in range(16)))
            await asyncio.wait_for(done.wait(), 60)
            elapsed = time.perf_counter() - started
            result["watch_events_per_s"] = round(watchers * events_per_watcher / elapsed, 1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 15)
        except TimeoutError:
            server.kill()
            await server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    result["create_ratio_to_store"] = round(result["create_per_s_64"] / result["store_create_per_s"], 3)
    # The same ratio for one client at a time, where each create waits for its own commit.
    result["create_ratio_to_store_1"] = round(result["create_per_s_1"] / result["store_create_per_s_1"], 3)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.seconds))))
