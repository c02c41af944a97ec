"""Service proxy and cluster DNS benchmark; prints one JSON line.

- HTTP requests/s and p99 latency from a client namespace to one backend pod: directly to its IP,
  through a ClusterIP in iptables mode, and through the userspace relay (keep-alive HTTP/1.1,
  16 connections; three interleaved rounds, medians; client, backend and relay are separate Python
  processes, so the relay's cost shows as latency more than as throughput). Needs root:
  everything runs in network namespaces created for the run (pinnace.proxy.netns_lab).
- seconds for a full iptables sync (render + iptables-restore) of 1,000 Services x 10 endpoints.
- DNS queries/s answered by DnsServer on loopback (UDP, a client process keeping 64 queries in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from dnslib import DNSRecord

from pinnace.dns.server import DnsConfig, DnsServer
from pinnace.proxy.iptables import IptablesProxier, RenderOptions
from pinnace.proxy.model import Endpoint, ServicePort
from pinnace.proxy.netns_lab import Lab

PORT = 8080  # identity TCP; HTTP on PORT + 1
CLUSTER_IP = "10.43.210.10"
ROUNDS = 3


async def http_numbers(seconds: float) -> dict:
    results: dict = {}
    with Lab.create(backends=1, subnet=7) as lab:
        backend = lab.backend_ips[0]
        lab.serve(PORT)
        proxier = IptablesProxier(RenderOptions(), netns=lab.node)
        try:
            await proxier.sync(
                [
                    ServicePort(
                        "default",
                        "bench",
                        "http",
                        "TCP",
                        CLUSTER_IP,
                        80,
                        endpoints=(Endpoint(backend, PORT + 1),),
                    )
                ]
            )
            relay_port = lab.relay([f"{backend}:{PORT + 1}"])
            runs = {
                "direct": (backend, PORT + 1),
                "iptables": (CLUSTER_IP, 80),
                "userspace": (f"10.98.{lab.subnet}.1", relay_port),
            }
            # Interleaved rounds, median of each: the machine is shared, so load drifts during a run.
            samples: dict[str, list[dict]] = {name: [] for name in runs}
            for _ in range(ROUNDS):
                for name, (host, port) in runs.items():
                    samples[name].append(
                        lab.run_client(lab.client, "http", host, str(port), "--seconds", str(seconds)))
            for name, outs in samples.items():
                results[f"{name}_rps"] = round(statistics.median(o["rps"] for o in outs), 1)
                results[f"{name}_p99_ms"] = round(statistics.median(o["p99_ms"] for o in outs), 3)
        finally:
            await proxier.cleanup()
    results["iptables_ratio"] = round(results["iptables_rps"] / results["direct_rps"], 3)
    results["userspace_ratio"] = round(results["userspace_rps"] / results["direct_rps"], 3)
    return results


async def sync_seconds() -> float:
    ports = [
        ServicePort(
            "bench",
            f"svc-{i}",
            "http",
            "TCP",
            f"10.43.{i // 250 + 100}.{i % 250 + 1}",
            80,
            endpoints=tuple(Endpoint(f"10.42.{i % 200}.{j + 1}", 8080) for j in range(10)),
        )
        for i in range(1000)
    ]
    with Lab.create(backends=1, subnet=8) as lab:
        proxier = IptablesProxier(RenderOptions(), netns=lab.node, masquerade_all=True)
        try:
            started = time.perf_counter()
            await proxier.sync(ports, full=True)
            return round(time.perf_counter() - started, 3)
        finally:
            await proxier.cleanup()


def dns_client(host: str, port: int, seconds: float, window: int = 64) -> None:
    """Keep `window` queries in flight for `seconds`; print answers/s."""
    names = [f"svc-{i}.default.svc.cluster.local" for i in range(200)]
    queries = [DNSRecord.question(n).pack() for n in names]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(0.5)
    answered, sent = 0, 0
    deadline = time.monotonic() + seconds
    for _ in range(window):
        sock.send(queries[sent % len(queries)])
        sent += 1
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            for _ in range(window):  # a lost datagram: refill the window
                sock.send(queries[sent % len(queries)])
                sent += 1
            continue
        if answer[3] & 0x0F == 0 and answer[6:8] != b"\x00\x00":  # NOERROR with an answer
            answered += 1
        sock.send(queries[sent % len(queries)])
        sent += 1
    print(answered / (time.monotonic() - started))


async def dns_qps(seconds: float) -> float:
    server = DnsServer(None, DnsConfig(listen=[("127.0.0.1", 0)]))
    await server.start()
    try:
        for i in range(200):
            server.resolver.set_service(
                {
                    "metadata": {"name": f"svc-{i}", "namespace": "default"},
                    "spec": {"clusterIP": f"10.43.3.{i + 1}", "ports": [{"port": 80}]},
                }
            )
        host, port = server.addresses[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--dns-client", host, str(port), str(seconds), stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return round(float(out), 1)
    finally:
        await server.stop()


async def main(seconds: float) -> dict:
    results: dict = {}
    if os.geteuid() == 0:
        results.update(await http_numbers(seconds))
        results["sync_1000x10_s"] = await sync_seconds()
    results["dns_qps"] = await dns_qps(seconds)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dns-client", nargs=3, metavar=("HOST", "PORT", "SECONDS"))
    args = parser.parse_args()
    if args.dns_client:
        dns_client(args.dns_client[0], int(args.dns_client[1]), float(args.dns_client[2]))
    else:
        print(json.dumps(asyncio.run(main(args.seconds))))
