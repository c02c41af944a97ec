"""Pod startup benchmark for the node agent with the cri runtime (containerd + runc): one JSON dict.

Same measurements and keys as `pod_startup.py` for the process runtime (`python bench/pod_startup.py
--runtime cri` dispatches here), with these differences:
- the pods run a busybox image built locally and imported into the agent's containerd before the
  waves (pre-pulled, `imagePullPolicy: IfNotPresent`), so no registry is involved;
- `floor_ms` is the median of RunPodSandbox + CreateContainer + StartContainer of the same image and
  command, sent by a bare CRI client to the same containerd in the same run (sequential, idle node);
- `engine_cpu_s_per_pod` (extra) is containerd's and the shims' CPU per pod in the 10/s wave; the
  agent's own CPU is `cpu_s_per_pod`, as for the process runtime;
- `floor_p50_ms_10`, `floor_p99_ms_10` (extra): the bare CRI client starting 50 pods at 10/s, the
  most containerd, runc and the kernel deliver on this machine at that rate;
- `p50_ms_2` (extra): 20 pods at 2/s, where pods hardly overlap: the agent's own overhead over the
  floor, without the CPU contention of runc and the CNI plugins that 10 pods/s bring on 2 cores.
Targets: p50 <= 1.5x floor_ms; p99 <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from pod_startup import ServerThread, delete_wave, free_port, percentile, run_wave

IMAGE = "pinnace.bench/busybox:1"
# After removing pods the kernel is still tearing their network namespaces down (seconds of system
# time on these machines): wait, so a wave does not measure the previous wave's clean-up.
SETTLE_SECONDS = 10.0
COMMAND = ["sleep", "3600"]
FLOOR_RUNS = 10


def pod(name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "startup"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": COMMAND}],
        },
    }


async def import_image(socket: Path, work: Path) -> None:
    from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image

    archive = work / "busybox.tar"
    await asyncio.to_thread(build_busybox_image, IMAGE, archive, work / "image-build", ImageConfig(cmd=["sh"]))
    process = await asyncio.create_subprocess_exec(
        "ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "import", str(archive),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"importing the bench image failed: {err.decode()}")


async def cri_floor_ms(socket: Path, work: Path, runs: int = FLOOR_RUNS, rate: float | None = None) -> list[float]:
    """RunPodSandbox + CreateContainer + StartContainer from a bare CRI client, `runs` times: one after
    the other (`rate` None: the floor), or started at `rate` per second (the runtime's own throughput)."""
    import grpc
    from cri_api.v1 import api_pb2 as pb
    from cri_api.v1 import api_pb2_grpc as rpc

    channel = grpc.aio.insecure_channel(f"unix://{socket}")
    service = rpc.RuntimeServiceStub(channel)
    sandboxes: list[str] = []

    async def one(index: int) -> float:
        uid = uuid.uuid4().hex
        log_dir = work / "floor-logs" / uid
        log_dir.mkdir(parents=True)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"floor-{index}", namespace="bench-floor", uid=uid),
            hostname=f"floor-{index}", log_directory=str(log_dir),
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"/pinnace-bench-floor/pod{uid}"),
        )
        started = time.perf_counter()
        sandbox = (await service.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)).pod_sandbox_id
        sandboxes.append(sandbox)
        container = (await service.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sandbox, sandbox_config=config,
            config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=IMAGE),
                                      command=COMMAND, log_path="c/0.log"),
        ), timeout=60)).container_id
        await service.StartContainer(pb.StartContainerRequest(container_id=container), timeout=60)
        return (time.perf_counter() - started) * 1000

    try:
        await one(-1)  # warms the image's snapshot up; not counted
        if rate is None:
            samples = [await one(index) for index in range(runs)]
        else:
            tasks = []
            for index in range(runs):
                tasks.append(asyncio.create_task(one(index)))
                await asyncio.sleep(1 / rate)
            samples = list(await asyncio.gather(*tasks))
    finally:
        for sandbox in sandboxes:
            await service.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
            await service.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)
        await channel.close()
        from pinnace.kubelet.runtime.cri import remove_cgroup_tree

        await asyncio.to_thread(remove_cgroup_tree, "/pinnace-bench-floor")
    return samples


def engine_cpu(containerd: psutil.Process) -> float:
    """CPU seconds of containerd and every shim it started (shims are reparented, so found by name)."""
    total = sum(containerd.cpu_times()[:2])
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "containerd-shim-runc-v2":
            try:
                total += sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
    return total


async def main(args: argparse.Namespace) -> dict:
    from pinnace.client import Client
    from pinnace.kubelet.runtime.cri import remove_cri_node

    if os.geteuid() != 0 or not shutil.which("containerd"):
        raise SystemExit("the cri benchmark needs root and containerd (Debian's containerd, runc, containernetworking-plugins)")
    work = Path(tempfile.mkdtemp(prefix="pinnace-bench-cri-"))
    node = f"bench-{uuid.uuid4().hex[:6]}"
    bridge = f"pnb{uuid.uuid4().hex[:6]}"
    cidr = "10.89.252.0/23"  # 100 pods of a wave plus the floor's
    data_dir = work / "node"
    socket = data_dir / "containerd" / "containerd.sock"
    runner = ServerThread(work / "server")
    server = runner.start()
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "agent", "--runtime", "cri",
        "--server", server.url, "--token", server.admin_token, "--ca-file", str(server.ca_path),
        "--node-name", node, "--data-dir", str(data_dir), "--pod-cidr", cidr, "--bridge", bridge,
        "--node-ip", "127.0.0.1", "--port", str(free_port()), "--read-only-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=open(os.environ.get("BENCH_AGENT_LOG", os.devnull), "w"),
    )
    client = Client(server.url, token=server.admin_token, ca_file=str(server.ca_path))
    result: dict = {"runtime": "cri"}
    try:
        line = await asyncio.wait_for(agent.stdout.readline(), 90)
        if b"registered" not in line:
            raise SystemExit(f"the agent did not start: {line!r}")
        process = psutil.Process(agent.pid)
        containerd = next(p for p in psutil.process_iter(["cmdline"])
                          if str(data_dir / "containerd" / "config.toml") in " ".join(p.info["cmdline"] or []))
        await import_image(socket, work)
        floor = statistics.median(await cri_floor_ms(socket, work))
        await asyncio.sleep(SETTLE_SECONDS)
        bare = await cri_floor_ms(socket, work, runs=50, rate=10)
        result["floor_p50_ms_10"] = round(percentile(bare, 0.5), 1)
        result["floor_p99_ms_10"] = round(percentile(bare, 0.99), 1)
        await asyncio.sleep(SETTLE_SECONDS)

        latencies = await run_wave(client, node, "calm", 20, 2, make_pod=pod)
        result["p50_ms_2"] = round(percentile(latencies, 0.5), 1)
        await delete_wave(client, "calm", 20)
        await asyncio.sleep(SETTLE_SECONDS)

        cpu_before, engine_before = sum(process.cpu_times()[:2]), engine_cpu(containerd)
        latencies = await run_wave(client, node, "slow", args.pods, 10, make_pod=pod)
        cpu_after, engine_after = sum(process.cpu_times()[:2]), engine_cpu(containerd)
        result["p50_ms_10"] = round(percentile(latencies, 0.5), 1)
        result["p99_ms_10"] = round(percentile(latencies, 0.99), 1)
        result["cpu_s_per_pod"] = round((cpu_after - cpu_before) / args.pods, 4)
        result["engine_cpu_s_per_pod"] = round((engine_after - engine_before) / args.pods, 4)
        await delete_wave(client, "slow", args.pods)
        await asyncio.sleep(SETTLE_SECONDS)
        latencies = await run_wave(client, node, "fast", args.pods, 50, make_pod=pod)
        result["p50_ms_50"] = round(percentile(latencies, 0.5), 1)
        result["p99_ms_50"] = round(percentile(latencies, 0.99), 1)
        await asyncio.sleep(5)  # idle: no probes, statuses settled
        result["rss_mb_100_idle"] = round(process.memory_info().rss / 2**20, 1)
        await delete_wave(client, "fast", args.pods)
        result["floor_ms"] = round(floor, 1)
    finally:
        if agent.returncode is None:
            # SIGTERM: the agent stops its containerd; the clean-up below starts one again to remove the pods.
            agent.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(agent.wait(), 60)
            except TimeoutError:
                agent.kill()
                await agent.wait()
        await remove_cri_node(str(data_dir), bridge, f"/pinnace/{node}")
        await client.close()
        runner.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result
