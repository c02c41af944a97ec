"""A throw-away network of namespaces for testing and benchmarking the proxy as root.

    client ns  eth0 10.98.<n>.2 ---- pc0 10.98.<n>.1   node ns   pb0 10.99.<n>.1 ---- eth0 10.99.<n>.2..  backend ns
                                     (the proxy's rules live here)

Every address lives inside namespaces the lab creates, so nothing touches the host's network; the
proxy under test is pointed at the node namespace (`IptablesProxier(netns=lab.node)`). Backends are
small identity servers (`python -m pinnace.proxy.netns_lab serve IP...`) that answer each TCP
connection and UDP datagram on a port, and each HTTP request on the next port, with the IP they
were reached on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

PYTHON = sys.executable


def sh(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    return subprocess.run(full, check=check, capture_output=True, text=True)


@dataclass
class Lab:
    """Create with `Lab.create(backends=3)`, always `close()` (a context manager does it)."""

    prefix: str
    subnet: int
    backend_ips: list[str]
    bridge: bool = False
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node(self) -> str:
        return f"{self.prefix}-node"

    @property
    def backend(self) -> str:
        return f"{self.prefix}-be"

    @property
    def client(self) -> str:
        return f"{self.prefix}-cl"

    @property
    def node_ip(self) -> str:
        return f"10.99.{self.subnet}.1"

    @property
    def client_ip(self) -> str:
        return f"10.99.{self.subnet}.100" if self.bridge else f"10.98.{self.subnet}.2"

    @classmethod
    def create(cls, backends: int = 3, subnet: int = 1, bridge: bool = False) -> Lab:
        """With `bridge`, client and backends are pods on one node bridge (pbr0, 10.99.<n>.1/24), as the
        kubelet wires them; otherwise each sits on its own routed link."""
        lab = cls(prefix=f"pnx{secrets.token_hex(3)}", subnet=subnet,
                  backend_ips=[f"10.99.{subnet}.{i + 2}" for i in range(backends)], bridge=bridge)
        try:
            lab._build_bridged() if bridge else lab._build()
        except BaseException:
            lab.close()
            raise
        return lab

    def _build(self) -> None:
        n = self.subnet
        for ns in (self.node, self.backend, self.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh("ip", "link", "add", "pb0", "type", "veth", "peer", "name", "eth0", "netns", self.backend, netns=self.node)
        sh("ip", "link", "add", "pc0", "type", "veth", "peer", "name", "eth0", "netns", self.client, netns=self.node)
        sh("ip", "addr", "add", f"10.99.{n}.1/24", "dev", "pb0", netns=self.node)
        sh("ip", "addr", "add", f"10.98.{n}.1/24", "dev", "pc0", netns=self.node)
        for dev in ("pb0", "pc0"):
            sh("ip", "link", "set", dev, "up", netns=self.node)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=self.node)
        # The node needs a route for service addresses so its own connections reach OUTPUT's DNAT.
        sh("ip", "route", "add", "10.43.0.0/16", "via", self.backend_ips[0], netns=self.node)
        sh("ip", "route", "add", "192.0.2.0/24", "via", self.backend_ips[0], netns=self.node)
        for ip in self.backend_ips:
            sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=self.backend)
        sh("ip", "link", "set", "eth0", "up", netns=self.backend)
        sh("ip", "route", "add", "default", "via", f"10.99.{n}.1", netns=self.backend)
        sh("ip", "addr", "add", f"10.98.{n}.2/24", "dev", "eth0", netns=self.client)
        sh("ip", "link", "set", "eth0", "up", netns=self.client)
        sh("ip", "route", "add", "default", "via", f"10.98.{n}.1", netns=self.client)

    def _build_bridged(self) -> None:
        n = self.subnet
        for ns in (self.node, self.backend, self.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh("ip", "link", "add", "pbr0", "type", "bridge", netns=self.node)
        sh("ip", "addr", "add", f"10.99.{n}.1/24", "dev", "pbr0", netns=self.node)
        sh("ip", "link", "set", "pbr0", "up", netns=self.node)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=self.node)
        sh("ip", "route", "add", "10.43.0.0/16", "dev", "pbr0", netns=self.node)
        for ns, dev, ips in ((self.backend, "pb0", self.backend_ips), (self.client, "pc0", [self.client_ip])):
            sh("ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns, netns=self.node)
            sh("ip", "link", "set", dev, "master", "pbr0", netns=self.node)
            # With br_netfilter a DNAT back to the port a packet came from is bridged, not routed, so
            # the port must allow hairpin forwarding (what kubelet's hairpin-veth mode does).
            sh("ip", "link", "set", dev, "type", "bridge_slave", "hairpin", "on", netns=self.node)
            sh("ip", "link", "set", dev, "up", netns=self.node)
            for ip in ips:
                sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=ns)
            sh("ip", "link", "set", "eth0", "up", netns=ns)
            sh("ip", "route", "add", "default", "via", f"10.99.{n}.1", netns=ns)

    def serve(self, port: int, ips: list[str] | None = None) -> None:
        """Start identity servers on the backend IPs: TCP and UDP on `port`, HTTP on `port + 1`."""
        argv = ["ip", "netns", "exec", self.backend, PYTHON, "-m", "pinnace.proxy.netns_lab", "serve",
                "--port", str(port), *(ips or self.backend_ips)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.processes.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("backend servers did not start")

    def relay(self, endpoints: list[str]) -> int:
        """Start a userspace relay in the node namespace, listening on the node's client-side IP."""
        argv = ["ip", "netns", "exec", self.node, PYTHON, "-m", "pinnace.proxy.netns_lab", "relay",
                "--listen", f"10.98.{self.subnet}.1", *endpoints]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.processes.append(proc)
        assert proc.stdout is not None
        return int(proc.stdout.readline())

    def run_client(self, netns: str, *args: str, timeout: float = 60) -> dict:
        out = subprocess.run(["ip", "netns", "exec", netns, PYTHON, "-m", "pinnace.proxy.netns_lab", *args],
                             check=True, capture_output=True, text=True, timeout=timeout)
        return json.loads(out.stdout)

    def close(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait()
        self.processes.clear()
        for ns in (self.client, self.backend, self.node):
            sh("ip", "netns", "del", ns, check=False)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- programs run inside the namespaces ---------------------------------------------------------

HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"


async def _serve(ips: list[str], port: int) -> None:
    async def identity(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Plain TCP on `port`: say who we are and hang up.
        writer.write(writer.get_extra_info("sockname")[0].encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keep-alive HTTP/1.1 on `port + 1`: one small response per request.
        ip = writer.get_extra_info("sockname")[0].encode()
        response = HTTP_RESPONSE % (len(ip), ip)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(response * max(1, data.count(b"\r\n\r\n")))
        except ConnectionError:
            pass
        finally:
            writer.close()

    class Udp(asyncio.DatagramProtocol):
        def __init__(self, ip: str) -> None:
            self.ip = ip.encode()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:
            self.transport.sendto(self.ip + b" " + data, addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    servers = []
    for ip in ips:
        servers.append(await asyncio.start_server(identity, ip, port, reuse_address=True, backlog=1024))
        servers.append(await asyncio.start_server(http, ip, port + 1, reuse_address=True, backlog=1024))
        await loop.create_datagram_endpoint(lambda ip=ip: Udp(ip), local_addr=(ip, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


def _connect(host: str, port: int, count: int, source: str | None) -> dict:
    counts: Counter[str] = Counter()
    errors = 0
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=2,
                                          source_address=(source, 0) if source else None) as s:
                counts[s.recv(100).decode().strip() or "empty"] += 1
        except OSError as error:
            counts[type(error).__name__] += 1
            errors += 1
    return {"counts": dict(counts), "errors": errors}


def _udp(host: str, port: int, count: int, source_port: int = 0) -> dict:
    """`count` datagrams, each from a new socket; with `source_port`, all from that one port (so they
    share one conntrack entry, as a long-lived UDP client does)."""
    counts: Counter[str] = Counter()
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", source_port))
            s.settimeout(1)
            s.sendto(b"ping%d" % i, (host, port))
            try:
                counts[s.recv(200).decode().split(" ")[0]] += 1
            except OSError as error:
                counts[type(error).__name__] += 1
    return {"counts": dict(counts)}


async def _http_load(host: str, port: int, seconds: float, concurrency: int) -> dict:
    """Keep-alive HTTP/1.1 GETs from `concurrency` connections for `seconds`: requests/s and p99."""
    latencies: list[float] = []
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    return {"rps": len(latencies) / elapsed, "p99_ms": p99 * 1000, "requests": len(latencies)}


async def _relay(listen: str, endpoints: list[str]) -> None:
    """A userspace relay for one service port to `endpoints` (IP:PORT), listening on `listen`."""
    from pinnace.proxy.model import Endpoint, ServicePort
    from pinnace.proxy.userspace import UserspaceProxier

    eps = tuple(Endpoint(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in endpoints)
    proxier = UserspaceProxier(listen_host=listen)
    await proxier.sync([ServicePort("default", "bench", "http", "TCP", "10.43.0.1", 80, endpoints=eps)])
    print(proxier.addresses()["default/bench:http/TCP"][1], flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="netns_lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("ips", nargs="+")
    connect = sub.add_parser("connect")
    connect.add_argument("host")
    connect.add_argument("port", type=int)
    connect.add_argument("count", type=int)
    connect.add_argument("--source")
    udp = sub.add_parser("udp")
    udp.add_argument("host")
    udp.add_argument("port", type=int)
    udp.add_argument("count", type=int)
    udp.add_argument("--source-port", type=int, default=0)
    http = sub.add_parser("http")
    http.add_argument("host")
    http.add_argument("port", type=int)
    http.add_argument("--seconds", type=float, default=3)
    http.add_argument("--concurrency", type=int, default=16)
    relay = sub.add_parser("relay")
    relay.add_argument("--listen", default="127.0.0.1")
    relay.add_argument("endpoints", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.ips, args.port))
    elif args.cmd == "connect":
        print(json.dumps(_connect(args.host, args.port, args.count, args.source)))
    elif args.cmd == "udp":
        print(json.dumps(_udp(args.host, args.port, args.count, args.source_port)))
    elif args.cmd == "relay":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_relay(args.listen, args.endpoints))
    elif args.cmd == "http":
        print(json.dumps(asyncio.run(_http_load(args.host, args.port, args.seconds, args.concurrency))))
    os._exit(0)


if __name__ == "__main__":
    main()
