"""Pod startup benchmark for the node agent: prints one JSON line.

Runs a real API server in this process (its own thread and loop) and `pinnace agent` as a separate
process, then measures Kubernetes' pod startup SLI: from pod creation to the pod seen Running and
Ready through a watch. "Creation" is the moment this client sends the create request, because
`metadata.creationTimestamp` has one-second resolution.
- `p50_ms_10`, `p99_ms_10`: 100 pods created at 10 pods/s;
- `p50_ms_50`, `p99_ms_50`: 100 pods created at 50 pods/s;
- `cpu_s_per_pod`: the agent's CPU seconds (its own process, not the containers) per pod started;
- `rss_mb_100_idle`: the agent's RSS with those 100 pods running idle;
- `floor_ms`: a bare posix_spawn of the same command, from this process (median of 20).
As root every pod gets its own network namespace, so this includes pod networking.

Usage: python bench/pod_startup.py --runtime process [--pods 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

COMMAND = ["sleep", "3600"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def spawn_floor_ms(runs: int = 20) -> float:
    path = shutil.which(COMMAND[0]) or COMMAND[0]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        pid = os.posix_spawn(path, COMMAND, os.environ)
        samples.append((time.perf_counter() - started) * 1000)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return statistics.median(samples)


class ServerThread:
    def __init__(self, data_dir: Path) -> None:
        from pinnace.apiserver.server import ApiServer, ServerConfig

        self.server = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1", insecure_port=0))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        return self.server

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def pod(name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "startup"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox", "command": COMMAND}],
        },
    }


def ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


async def run_wave(client, node: str, prefix: str, count: int, rate: float, make_pod=None) -> list[float]:
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    listing = await client.list("v1/pods", namespace="default")
    done = asyncio.Event()

    async def watch() -> None:
        async for _kind, obj in client.watch(
            "v1/pods", namespace="default", resource_version=listing["metadata"]["resourceVersion"]
        ):
            name = obj["metadata"]["name"]
            if name.startswith(prefix) and name not in seen and ready(obj):
                seen[name] = time.perf_counter()
                if len(seen) == count:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    creates = []
    started = time.perf_counter()
    for index in range(count):
        name = f"{prefix}-{index}"
        target = started + index / rate
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
        sent[name] = time.perf_counter()
        creates.append(asyncio.create_task(client.create("v1/pods", (make_pod or pod)(name, node))))
    await asyncio.gather(*creates)
    await asyncio.wait_for(done.wait(), 120)
    watcher.cancel()
    return [(seen[name] - sent[name]) * 1000 for name in sent]


async def delete_wave(client, prefix: str, count: int) -> None:
    await asyncio.gather(
        *(client.delete("v1/pods", f"{prefix}-{index}", namespace="default") for index in range(count))
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = (await client.list("v1/pods", namespace="default"))["items"]
        if not any(item["metadata"]["name"].startswith(prefix) for item in items):
            return
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> dict:
    from pinnace.client import Client
    from pinnace.kubelet.agent import cleanup_node

    work = Path(tempfile.mkdtemp(prefix="pinnace-bench-"))
    node = f"bench-{uuid.uuid4().hex[:6]}"
    bridge = f"pn-{uuid.uuid4().hex[:8]}"
    cidr = "10.42.251.0/24"
    runner = ServerThread(work / "server")
    server = runner.start()
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "agent", "--runtime", args.runtime,
        "--server", server.url, "--token", server.admin_token, "--ca-file", str(server.ca_path),
        "--node-name", node, "--data-dir", str(work / "node"), "--pod-cidr", cidr, "--bridge", bridge,
        "--node-ip", "127.0.0.1", "--port", str(free_port()), "--read-only-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=open(os.environ.get("BENCH_AGENT_LOG", os.devnull), "w"),
    )
    client = Client(server.url, token=server.admin_token, ca_file=str(server.ca_path))
    result: dict = {"runtime": args.runtime}
    try:
        line = await asyncio.wait_for(agent.stdout.readline(), 60)
        if b"registered" not in line:
            raise SystemExit(f"the agent did not start: {line!r}")
        process = psutil.Process(agent.pid)
        cpu_before = sum(process.cpu_times()[:2])
        latencies = await run_wave(client, node, "slow", args.pods, 10)
        cpu_after = sum(process.cpu_times()[:2])
        result["p50_ms_10"] = round(percentile(latencies, 0.5), 1)
        result["p99_ms_10"] = round(percentile(latencies, 0.99), 1)
        result["cpu_s_per_pod"] = round((cpu_after - cpu_before) / args.pods, 4)
        await delete_wave(client, "slow", args.pods)
        latencies = await run_wave(client, node, "fast", args.pods, 50)
        result["p50_ms_50"] = round(percentile(latencies, 0.5), 1)
        result["p99_ms_50"] = round(percentile(latencies, 0.99), 1)
        await asyncio.sleep(5)  # idle: probes none, statuses settled
        result["rss_mb_100_idle"] = round(process.memory_info().rss / 2**20, 1)
        await delete_wave(client, "fast", args.pods)
        result["floor_ms"] = round(spawn_floor_ms(), 2)
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGKILL)
            await agent.wait()
        await cleanup_node(str(work / "node"), bridge=bridge, pod_cidr=cidr)
        await client.close()
        runner.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("process", "cri"), default="process")
    parser.add_argument("--pods", type=int, default=100)
    arguments = parser.parse_args()
    if arguments.runtime == "cri":
        from pod_startup_cri import main as cri_main  # containerd: images, its own floor

        print(json.dumps(asyncio.run(cri_main(arguments))), flush=True)
    else:
        print(json.dumps(asyncio.run(main(arguments))), flush=True)
