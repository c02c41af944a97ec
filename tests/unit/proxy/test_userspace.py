"""userspace relay against identity servers on loopback addresses (no root, no API server)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest

from pinnace.proxy.model import Endpoint, ServicePort
from pinnace.proxy.userspace import UserspaceProxier

BACKENDS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
CHI_SQUARE_LIMIT = 18.42  # 2 degrees of freedom, p = 0.0001: a fair spread practically never fails


class UdpIdentity(asyncio.DatagramProtocol):
    def __init__(self, ip):
        self.ip = ip.encode()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(self.ip, addr)


@pytest.fixture
async def backends():
    """Identity servers: each TCP connection and UDP datagram is answered with the server's IP."""

    async def identity(reader, writer):
        writer.write(writer.get_extra_info("sockname")[0].encode())
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(identity, BACKENDS[0], 0)
    port = tcp.sockets[0].getsockname()[1]
    servers = [tcp] + [await asyncio.start_server(identity, ip, port) for ip in BACKENDS[1:]]
    udp = [(await loop.create_datagram_endpoint(lambda ip=ip: UdpIdentity(ip), local_addr=(ip, port)))[0]
           for ip in BACKENDS]
    yield port
    for s in servers:
        s.close()
    for t in udp:
        t.close()


@pytest.fixture
async def proxier():
    p = UserspaceProxier(listen_host="127.0.0.1", node_port_host="127.0.0.1")
    yield p
    await p.close()


def service(port, ready=3, protocol="TCP", affinity=None, node_port=None):
    eps = tuple(Endpoint(ip, port, i < ready) for i, ip in enumerate(BACKENDS))
    return ServicePort("default", "web", "http", protocol, "10.43.0.5", 80, node_port=node_port,
                       session_affinity_seconds=affinity, endpoints=eps)


async def fetch(address, source="127.0.0.1"):
    reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
    try:
        return (await reader.read(100)).decode()
    finally:
        writer.close()


async def spread(address, count, source="127.0.0.1"):
    return Counter([await fetch(address, source) for _ in range(count)])


async def test_connections_spread_over_ready_endpoints(backends, proxier):
    await proxier.sync([service(backends)])
    counts = await spread(proxier.addresses()["default/web:http/TCP"], 300)
    assert set(counts) == set(BACKENDS)
    assert sum((c - 100) ** 2 / 100 for c in counts.values()) < CHI_SQUARE_LIMIT, counts


async def test_client_ip_affinity(backends, proxier):
    await proxier.sync([service(backends, affinity=60)])
    counts = await spread(proxier.addresses()["default/web:http/TCP"], 30)
    assert len(counts) == 1


async def test_not_ready_endpoint_gets_no_new_connections(backends, proxier):
    await proxier.sync([service(backends)])
    await proxier.sync([service(backends, ready=1)])
    counts = await spread(proxier.addresses()["default/web:http/TCP"], 20)
    assert set(counts) == {BACKENDS[0]}


async def test_no_ready_endpoint_refuses_at_once_and_keeps_the_port(backends, proxier):
    await proxier.sync([service(backends, ready=0)])
    address = proxier.addresses()["default/web:http/TCP"]
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(*address), 1)
    await proxier.sync([service(backends, ready=1)])
    assert proxier.addresses()["default/web:http/TCP"] == address
    assert await fetch(address) == BACKENDS[0]
    await proxier.sync([service(backends, ready=0)])
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(*address), 1)


async def test_all_endpoints_failing_resets_the_connection(proxier):
    sp = ServicePort("default", "web", "http", "TCP", "10.43.0.5", 80, endpoints=(Endpoint("127.0.0.9", 1),))
    await proxier.sync([sp])
    reader, writer = await asyncio.open_connection(*proxier.addresses()["default/web:http/TCP"])
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(100), 2)
    writer.close()


async def test_dead_endpoint_is_skipped(backends, proxier):
    sp = service(backends)
    dead = ServicePort(**{**{f: getattr(sp, f) for f in sp.__dataclass_fields__},
                          "endpoints": (Endpoint("127.0.0.9", 1), *sp.endpoints[:1])})
    await proxier.sync([dead])
    counts = await spread(proxier.addresses()["default/web:http/TCP"], 10)
    assert set(counts) == {BACKENDS[0]}


async def test_node_port_listener(backends, proxier):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        node_port = s.getsockname()[1]
    await proxier.sync([service(backends, node_port=node_port)])
    assert await fetch(("127.0.0.1", node_port)) in BACKENDS


async def test_udp_relay(backends, proxier):
    await proxier.sync([service(backends, protocol="UDP", ready=1)])
    address = proxier.addresses()["default/web:http/UDP"]
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        for _ in range(3):
            await loop.sock_sendall(sock, b"ping")
            assert await asyncio.wait_for(loop.sock_recv(sock, 100), 2) == BACKENDS[0].encode()


async def test_published_port_is_reused(backends):
    first = UserspaceProxier()
    await first.sync([service(backends)])
    port = first.addresses()["default/web:http/TCP"][1]
    await first.close()
    second = UserspaceProxier(port_hint=lambda sp: port)
    try:
        await second.sync([service(backends)])
        assert second.addresses()["default/web:http/TCP"][1] == port
    finally:
        await second.close()
