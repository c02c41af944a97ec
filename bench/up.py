"""How fast `pinnace up` is ready and how little it costs at rest.

Prints one JSON line: seconds from starting `pinnace up` to its node Ready (`ready_s`) and to a first pod
Running (`first_pod_running_s`); resident memory and CPU use of the pinnace process (API server,
scheduler, controllers, DNS, proxy and the node agent together; the pods are processes of their own)
with one node at rest (`rss_mb_1node`, `cpu_pct_1node`) and with 100 running pods
(`rss_mb_100pods`, `cpu_pct_100pods`). CPU percent is of one core, averaged over `--idle-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from pinnace.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pod(name: str, command: list[str]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "bench", "command": command}]}}


async def wait_pods_running(client: Client, count: int, selector: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = (await client.list("v1/pods", "default", label_selector=selector))["items"]
        if sum(1 for p in pods if p.get("status", {}).get("phase") == "Running") >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} pods Running after {timeout:.0f}s")


def sample_cpu(process: psutil.Process, seconds: float) -> float:
    start = process.cpu_times()
    time.sleep(seconds)
    end = process.cpu_times()
    return 100.0 * ((end.user - start.user) + (end.system - start.system)) / seconds


async def measure(args: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="pinnace-bench-up-"))
    argv = [sys.executable, "-m", "pinnace", "up", "--data-dir", str(data_dir), "--port", str(free_port()),
            "--dns-port", str(free_port())]
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result: dict = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("cluster ready"):
                result["ready_s"] = round(time.monotonic() - started, 3)
                break
        else:
            raise RuntimeError("pinnace up exited before it was ready")
        client = await Client.from_kubeconfig(str(data_dir / "kubeconfig.yaml"))
        try:
            await client.create("v1/pods", pod("first", ["sleep", "3600"]), "default")
            await wait_pods_running(client, 1, None, 60)
            result["first_pod_running_s"] = round(time.monotonic() - started, 3)
            await client.delete("v1/pods", "first", "default", grace_period_seconds=0)
            await asyncio.sleep(args.settle_seconds)
            me = psutil.Process(process.pid)
            result["cpu_pct_1node"] = round(await asyncio.to_thread(sample_cpu, me, args.idle_seconds), 2)
            result["rss_mb_1node"] = round(me.memory_info().rss / 2**20, 1)
            deployment = {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "idle"},
                "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "idle"}},
                         "template": {"metadata": {"labels": {"app": "idle"}},
                                      "spec": {"containers": [{"name": "main", "image": "bench",
                                                               "command": ["sleep", "3600"]}]}}},
            }
            await client.create("apps/v1/deployments", deployment, "default")
            await wait_pods_running(client, args.pods, "app=idle", 300)
            await asyncio.sleep(args.settle_seconds)
            result["cpu_pct_100pods"] = round(await asyncio.to_thread(sample_cpu, me, args.idle_seconds), 2)
            result["rss_mb_100pods"] = round(me.memory_info().rss / 2**20, 1)
        finally:
            await client.close()
    finally:
        process.terminate()
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
        subprocess.run([sys.executable, "-m", "pinnace", "down", "--data-dir", str(data_dir), "--purge"],
                       capture_output=True)
    result["pods"] = args.pods
    result["anchor_k3s_rss_mb"] = 1500
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
