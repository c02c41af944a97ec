"""The DNS server over real loopback sockets: UDP, TCP and the upstream forwarder (no API server)."""

from __future__ import annotations

import asyncio
import socket
import struct

from dnslib import RCODE, RR, A, DNSRecord

from pinnace.dns.server import DnsConfig, DnsServer


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers every A question with 192.0.2.53."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, rdata=A("192.0.2.53"), ttl=60))
        self.transport.sendto(reply.pack(), addr)


async def udp_query(address, name, qtype="A"):
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, DNSRecord.question(name, qtype).pack())
        return DNSRecord.parse(await asyncio.wait_for(loop.sock_recv(sock, 4096), 2))


async def tcp_query(address, name, qtype="A"):
    reader, writer = await asyncio.open_connection(*address)
    data = DNSRecord.question(name, qtype).pack()
    writer.write(struct.pack("!H", len(data)) + data)
    (length,) = struct.unpack("!H", await reader.readexactly(2))
    reply = DNSRecord.parse(await reader.readexactly(length))
    writer.close()
    return reply


async def test_udp_tcp_and_upstream_forwarding():
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(FakeUpstream, local_addr=("127.0.0.1", 0))
    server = DnsServer(None, DnsConfig(listen=[("127.0.0.1", 0)],
                                       upstream=[upstream.get_extra_info("sockname")[:2]]))
    await server.start()
    try:
        server.resolver.set_service({"metadata": {"name": "web", "namespace": "default"},
                                     "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 80}]}})
        address = server.addresses[0]
        reply = await udp_query(address, "web.default.svc.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.43.0.20"]
        reply = await tcp_query(address, "web.default.svc.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.43.0.20"]
        reply = await udp_query(address, "example.org")
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.53"]
        reply = await tcp_query(address, "example.org")
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.53"]
        # ExternalName: the CNAME plus the upstream's answer for its target, as stub resolvers need.
        server.resolver.set_service({"metadata": {"name": "ext", "namespace": "default"},
                                     "spec": {"type": "ExternalName", "externalName": "example.com"}})
        reply = await udp_query(address, "ext.default.svc.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["example.com.", "192.0.2.53"]
    finally:
        await server.stop()
        upstream.close()


async def test_unreachable_upstream_gives_servfail():
    server = DnsServer(None, DnsConfig(listen=[("127.0.0.1", 0)], upstream=[("127.0.0.1", 9)],
                                       upstream_timeout=0.3))
    await server.start()
    try:
        reply = await udp_query(server.addresses[0], "example.org")
        assert reply.header.rcode == RCODE.SERVFAIL
    finally:
        await server.stop()
