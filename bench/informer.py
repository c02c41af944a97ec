"""Informer benchmark: prints one JSON line.

A real API server runs in a child process (so it does not share this process's event loop). Measured:
- sync_10k_s: a fresh informer's paginated list of 10,000 pods until wait_synced();
- events_per_s, p99_ms: pods created by concurrent writers, from the moment each create is sent until the
  informer's add handler sees it (throughput over the whole burst, and the 99th percentile latency);
- bytes_per_pod: memory held by the informer cache per pod (deep size of the cached dicts and indexes);
- raw_events_per_s: how fast a bare aiohttp loop (read lines, orjson.loads) consumes a watch stream that
  replays the burst from its starting resourceVersion; informer_events_per_s: the same replay read by an
  informer (parse, cache, index, handler); handler_ratio_to_raw = informer / raw.

    python bench/informer.py [--pods 10000] [--burst 1500] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pinnace.client import Client, Informer  # noqa: E402

SERVER_SCRIPT = """
import asyncio, sys
from pinnace.apiserver.server import ApiServer, ServerConfig

async def main():
    server = ApiServer(ServerConfig(data_dir=sys.argv[1], port=0 if sys.argv[2] == "0" else int(sys.argv[2]),
                                    bind_address="127.0.0.1"))
    await server.start()
    print("READY", server.url, server.kubeconfig_path, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench", "tier": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/app:1.0",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                }
            ],
            "nodeName": "",
        },
    }


async def create_pods(
    client: Client, names: list[str], concurrency: int, sent: dict[str, float] | None = None
) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def writer() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            if sent is not None:
                sent[name] = time.perf_counter()
            await client.create("v1/pods", pod(name), namespace="default")

    await asyncio.gather(*(writer() for _ in range(concurrency)))


def deep_size(root: Any) -> int:
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
    return total


async def raw_watch_rate(client: Client, resource_version: str, count: int) -> float:
    """A bare aiohttp loop: read the watch stream, split lines, parse JSON. Events per second.

    Like any watcher it re-watches from the last resourceVersion when the server ends the stream (the
    server caps how much backlog one watch may replay)."""
    url = client.server + "/api/v1/pods"
    seen = 0
    start = time.perf_counter()
    while seen < count:
        params = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": "120"}
        async with client.session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as response:
            response.raise_for_status()
            pending = b""
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line:
                        event = orjson.loads(line)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            seen += 1
                            resource_version = event["object"]["metadata"]["resourceVersion"]
                if seen >= count:
                    break
    return seen / (time.perf_counter() - start)


async def informer_watch_rate(client: Client, resource_version: str, count: int) -> float:
    """The same replay through an informer's watch path (parse, cache, index, handler; re-watching)."""
    informer = Informer(client, "v1/pods")
    done = asyncio.Event()
    seen = 0

    def on_add(obj: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    async def watch() -> None:
        while True:
            await informer._watch()

    informer.add_handler(on_add=on_add)
    informer.resource_version = resource_version
    start = time.perf_counter()
    task = asyncio.ensure_future(watch())
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return seen / elapsed


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="pinnace-bench-")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_SCRIPT, data_dir, str(port), stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 60)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"server did not start: {line!r}")
        kubeconfig = line.split()[2].decode()
        drain = asyncio.ensure_future(_drain(server.stdout))  # a full pipe would stall the server
        writer = await Client.from_kubeconfig(kubeconfig, qps=None)
        reader = await Client.from_kubeconfig(kubeconfig, qps=None)
        try:
            progress(f"creating {args.pods} pods")
            await create_pods(writer, [f"seed-{i:05d}" for i in range(args.pods)], args.concurrency)
            progress("syncing an informer")

            gc.collect()
            informer = Informer(reader, "v1/pods")
            start = time.perf_counter()
            await informer.start()
            await informer.wait_synced(timeout=120)
            sync_s = time.perf_counter() - start
            bytes_per_pod = deep_size([informer._items, informer._indices]) / max(1, len(informer))

            arrived: dict[str, float] = {}
            all_arrived = asyncio.Event()

            def on_add(obj: dict[str, Any]) -> None:
                name = obj["metadata"]["name"]
                if name.startswith("burst-"):
                    arrived[name] = time.perf_counter()
                    if len(arrived) >= args.burst:
                        all_arrived.set()

            informer.add_handler(on_add=on_add)
            before = await writer.list("v1/pods", limit=1)
            burst_rv = before["metadata"]["resourceVersion"]
            sent: dict[str, float] = {}
            progress(f"burst of {args.burst} pods")
            burst_start = time.perf_counter()
            await create_pods(writer, [f"burst-{i:05d}" for i in range(args.burst)], args.concurrency, sent)
            await asyncio.wait_for(all_arrived.wait(), 120)
            burst_s = max(arrived.values()) - burst_start
            latencies = sorted((arrived[n] - sent[n]) * 1000 for n in sent)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            await informer.stop()

            # Replays of the burst from its starting resourceVersion (served from the API server's watch
            # cache, so the burst must fit its window): raw and informer alternately, the median of each,
            # so a noisy neighbour on the machine does not decide the ratio.
            raw_rates, informer_rates = [], []
            progress("replaying the burst")
            for _ in range(args.replays):
                raw_rates.append(await raw_watch_rate(reader, burst_rv, args.burst))
                informer_rates.append(await informer_watch_rate(reader, burst_rv, args.burst))
            raw, handled = statistics.median(raw_rates), statistics.median(informer_rates)
            return {
                "sync_10k_s": round(sync_s, 3),
                "pods": args.pods,
                "events_per_s": round(args.burst / burst_s, 1),
                "p99_ms": round(p99, 1),
                "p50_ms": round(latencies[len(latencies) // 2], 1),
                "bytes_per_pod": int(bytes_per_pod),
                "raw_events_per_s": round(raw, 1),
                "informer_events_per_s": round(handled, 1),
                "handler_ratio_to_raw": round(handled / raw, 3),
            }
        finally:
            drain.cancel()
            await writer.close()
            await reader.close()
    finally:
        server.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait(), 10)
        if server.returncode is None:
            server.kill()
            await server.wait()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=1_500, help="at most the server's watch cache window (2,000)")
    parser.add_argument("--replays", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
