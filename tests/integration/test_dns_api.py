"""Cluster DNS against a real API server: records follow Services, EndpointSlices and Pods."""

from __future__ import annotations

import asyncio
import socket
import time

from dnslib import RR, A, DNSRecord

from pinnace.dns.server import CLUSTER_DNS_IP, DnsConfig, DnsServer, ensure_kube_dns_service


class FakeUpstream(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, rdata=A("192.0.2.99"), ttl=60))
        self.transport.sendto(reply.pack(), addr)


async def query(address, name, qtype="A"):
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, DNSRecord.question(name, qtype).pack())
        reply = DNSRecord.parse(await asyncio.wait_for(loop.sock_recv(sock, 4096), 2))
    return sorted(str(rr.rdata) for rr in reply.rr)


async def eventually(address, name, expected, qtype="A", timeout=5.0):
    deadline = time.monotonic() + timeout
    while (got := await query(address, name, qtype)) != expected:
        assert time.monotonic() < deadline, f"{name} {qtype}: {got}, want {expected}"
        await asyncio.sleep(0.05)


async def test_dns_follows_the_api(client):
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(FakeUpstream, local_addr=("127.0.0.1", 0))
    server = DnsServer(client, DnsConfig(listen=[("127.0.0.1", 0)], upstream=[upstream.get_extra_info("sockname")[:2]]))
    await server.start()
    try:
        address = server.addresses[0]
        web = await client.create("v1/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        await eventually(address, "web.default.svc.cluster.local", [web["spec"]["clusterIP"]])
        await eventually(address, "_http._tcp.web.default.svc.cluster.local",
                         ["0 100 80 web.default.svc.cluster.local."], qtype="SRV")

        await client.create("v1/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}})
        await client.create("discovery.k8s.io/v1/endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.7"], "conditions": {"ready": True}},
                          {"addresses": ["10.42.0.8"], "conditions": {"ready": False}}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]})
        await eventually(address, "db.default.svc.cluster.local", ["10.42.0.7"])

        pod = await client.create("v1/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "default"},
            "spec": {"hostname": "db-0", "subdomain": "db", "containers": [{"name": "c", "image": "busybox"}]}})
        pod["status"] = {"phase": "Running", "podIP": "10.42.0.9", "podIPs": [{"ip": "10.42.0.9"}],
                         "conditions": [{"type": "Ready", "status": "True"}]}
        await client.update_status("v1/pods", pod)
        await eventually(address, "db-0.db.default.svc.cluster.local", ["10.42.0.9"])
        await eventually(address, "10-42-0-9.default.pod.cluster.local", ["10.42.0.9"])

        await client.create("v1/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "search", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "search.example.org"}})
        await eventually(address, "search.default.svc.cluster.local", ["search.example.org."], qtype="CNAME")
        await eventually(address, "example.org", ["192.0.2.99"])  # outside the zone: upstream

        await client.delete("v1/services", "web", namespace="default")
        await eventually(address, "web.default.svc.cluster.local", [])
    finally:
        await server.stop()
        upstream.close()


async def test_ensure_kube_dns_service(client):
    await ensure_kube_dns_service(client, "192.0.2.53", port=10053)
    await ensure_kube_dns_service(client, "192.0.2.53", port=10053)  # idempotent
    svc = await client.get("v1/services", "kube-dns", namespace="kube-system")
    assert svc["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert svc["metadata"]["labels"]["kubernetes.io/cluster-service"] == "true"
    assert sorted((p["name"], p["protocol"], p["port"]) for p in svc["spec"]["ports"]) == [
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]
    assert not svc["spec"].get("selector")
    endpoints = await client.get("v1/endpoints", "kube-dns", namespace="kube-system")
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "192.0.2.53"}]
    eps = await client.get("discovery.k8s.io/v1/endpointslices", "kube-dns-pinnace", namespace="kube-system")
    assert eps["endpoints"][0]["addresses"] == ["192.0.2.53"] and eps["ports"][0]["port"] == 10053


async def test_pinnace_dns_command(client, kubeconfig):
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace.cli.main", "dns", "--kubeconfig", str(kubeconfig), "--listen",
        "127.0.0.1:0", "--no-upstream", "--register", "192.0.2.53", stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("dns answering on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        await eventually(("127.0.0.1", port), "kube-dns.kube-system.svc.cluster.local", [CLUSTER_DNS_IP])
    finally:
        proc.terminate()
        await proc.wait()
