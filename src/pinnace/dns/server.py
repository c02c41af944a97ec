"""Cluster DNS server: answers for the cluster zone from a precomputed table, forwards the rest.

`DnsServer(client, DnsConfig(...))` watches Services, EndpointSlices and Pods through informers and
keeps a `RecordTable` current: each event recomputes the records of the one Service it concerns, so
a query is a dictionary lookup. Packed answers are cached by the query's bytes (everything after the
ID) until the table changes, so a repeated question costs no parsing at all; that is what makes the
server fast enough in Python (thousands of queries per second on one core).

Names outside the zone go to `upstream` (a list of (host, port); UDP), or are REFUSED when there is
none; the target of an ExternalName CNAME is resolved there too, so the answer carries the whole
chain as stub resolvers expect. Answers over UDP larger than the client's buffer (512 bytes, or its EDNS size) come back
truncated so the client retries over TCP, which the server also serves.

Listening on the cluster DNS address 10.43.0.10 is done the Kubernetes way: `ensure_kube_dns_service`
creates the `kube-system/kube-dns` Service with that ClusterIP plus Endpoints and an EndpointSlice
pointing at wherever this server listens, and the proxy carries the traffic there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from pinnace.dns.records import RecordTable, fqdn, service_records

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CLUSTER_DNS_IP = "10.43.0.10"


@dataclass
class DnsConfig:
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 10053)])
    cluster_domain: str = "cluster.local"
    upstream: list[tuple[str, int]] | None = None
    upstream_timeout: float = 2.0
    tcp: bool = True
    cache_size: int = 50_000


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The host's resolvers, as upstream servers (CoreDNS's `forward . /etc/resolv.conf`)."""
    try:
        with open(path) as f:
            return [(line.split()[1], 53) for line in f if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []


def _key(obj: Mapping) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


class Resolver:
    """The cluster's DNS data and the answer logic, with no sockets (unit tests drive it directly)."""

    def __init__(self, zone: str = "cluster.local", upstream_configured: bool = False) -> None:
        self.table = RecordTable(zone)
        self.zone = self.table.zone
        self.upstream_configured = upstream_configured
        self.services: dict[str, Mapping] = {}
        self.slices: dict[str, dict[str, Mapping]] = {}  # service key -> slice key -> slice
        self.pods: dict[str, dict[str, Mapping]] = {}  # "<ns>/<subdomain>" -> pod key -> pod
        self._pod_subdomain: dict[str, str] = {}  # pod key -> "<ns>/<subdomain>"
        self._cache: dict[tuple[bool, bytes], bytes] = {}
        self._cache_generation = -1
        self.cache_size = 50_000

    # ---- objects in -------------------------------------------------------------------------

    def _recompute(self, service_key: str) -> None:
        svc = self.services.get(service_key)
        if svc is None:
            self.table.replace(service_key, [])
            return
        records = service_records(
            svc,
            self.slices.get(service_key, {}).values(),
            self.pods.get(service_key, {}).values(),
            self.zone.rstrip("."),
        )
        self.table.replace(service_key, records)

    def set_service(self, svc: Mapping) -> None:
        key = _key(svc)
        self.services[key] = svc
        self._recompute(key)

    def delete_service(self, svc: Mapping) -> None:
        key = _key(svc)
        self.services.pop(key, None)
        self._recompute(key)

    def set_slice(self, eps: Mapping) -> None:
        meta = eps.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        key = f"{meta.get('namespace') or 'default'}/{service}"
        self.slices.setdefault(key, {})[_key(eps)] = eps
        self._recompute(key)

    def delete_slice(self, eps: Mapping) -> None:
        meta = eps.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        key = f"{meta.get('namespace') or 'default'}/{service}"
        self.slices.get(key, {}).pop(_key(eps), None)
        self._recompute(key)

    def set_pod(self, pod: Mapping) -> None:
        pod_key = _key(pod)
        spec = pod.get("spec") or {}
        old = self._pod_subdomain.pop(pod_key, None)
        if old is not None:
            self.pods.get(old, {}).pop(pod_key, None)
        new = None
        if spec.get("subdomain") and spec.get("hostname"):
            new = f"{pod_key.split('/')[0]}/{spec['subdomain']}"
            self.pods.setdefault(new, {})[pod_key] = pod
            self._pod_subdomain[pod_key] = new
        for key in {old, new} - {None}:
            self._recompute(key)  # type: ignore[arg-type]

    def delete_pod(self, pod: Mapping) -> None:
        pod_key = _key(pod)
        old = self._pod_subdomain.pop(pod_key, None)
        if old is not None:
            self.pods.get(old, {}).pop(pod_key, None)
            self._recompute(old)

    # ---- questions in, answers out ------------------------------------------------------------

    def answer(self, data: bytes, udp: bool = True) -> bytes | Upstream:
        """The packed answer to a packed query, or what to ask the upstream servers first."""
        if self._cache_generation != self.table.generation:
            self._cache.clear()
            self._cache_generation = self.table.generation
        data = bytes(data)
        cache_key = (udp, data[2:])
        cached = self._cache.get(cache_key)
        if cached is not None:
            return data[:2] + cached
        request = DNSRecord.parse(data)
        reply = self.resolve(request)
        if isinstance(reply, Upstream):
            return reply
        packed = finish(request, reply, udp)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[cache_key] = packed[2:]
        return packed

    def resolve(self, request: DNSRecord) -> DNSRecord | Upstream:
        """The reply for a parsed query, or an `Upstream` when (part of) it comes from the upstream."""
        reply = request.reply()  # copies the ID and question, sets QR, AA and RA
        if len(request.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return reply
        question = request.q
        name = str(question.qname).lower()
        qtype = question.qtype
        if not self.table.in_zone(name):
            exists, records = self.table.lookup(name, qtype)  # PTRs for cluster addresses
            if records:
                reply.add_answer(*records)
                return reply
            if self.upstream_configured:
                return Upstream(request)
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        exists, records = self.table.lookup(name, qtype)
        reply.add_answer(*records)
        # Follow a CNAME (one hop is all Kubernetes names produce): stub resolvers such as glibc's
        # expect the whole chain in the answer and do not chase a bare CNAME themselves.
        if records and records[0].rtype == QTYPE.CNAME and qtype not in (QTYPE.CNAME, QTYPE.ANY):
            target = str(records[0].rdata.label).lower()
            if self.table.in_zone(target):
                _, more = self.table.lookup(target, qtype)
                reply.add_answer(*more)
            elif self.upstream_configured:
                return Upstream(request, reply, target)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        if not reply.rr:
            reply.add_auth(self.table.soa)  # negative answers carry the SOA, for negative caching
        return reply


@dataclass
class Upstream:
    """A query the upstream servers must answer: the whole of it, or the target of an ExternalName
    CNAME (`partial` is then the in-zone part of the reply, to be completed with their answer)."""

    request: DNSRecord
    partial: DNSRecord | None = None
    target: str | None = None


def finish(request: DNSRecord, reply: DNSRecord, udp: bool) -> bytes:
    packed = bytes(reply.pack())
    if udp and len(packed) > _udp_limit(request):
        reply = request.reply()
        reply.header.tc = 1  # the client asks again over TCP
        packed = bytes(reply.pack())
    return packed


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, int(rr.rclass))
    return 512


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            result = self.server.resolver.answer(data, udp=True)
        except Exception:  # a malformed packet from the network must not stop the server
            log.debug("bad DNS query from %s", addr, exc_info=True)
            return
        if isinstance(result, bytes):
            self.transport.sendto(result, addr)  # type: ignore[union-attr]
        else:
            self.server._spawn(self._forward(data, result, addr))

    async def _forward(self, data: bytes, pending: Upstream, addr: tuple) -> None:
        answer = await self.server.complete(data, pending, udp=True)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)


class _ForwardProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class DnsServer:
    """Cluster DNS for one or more listen addresses (UDP and TCP on each)."""

    def __init__(self, client: Any, config: DnsConfig | None = None, factory: Any = None) -> None:
        self.client = client
        self.config = config or DnsConfig()
        self.resolver = Resolver(self.config.cluster_domain, bool(self.config.upstream))
        self.resolver.cache_size = self.config.cache_size
        self.factory = factory
        self._own_factory = False
        self._transports: list[asyncio.DatagramTransport] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self.addresses: list[tuple[str, int]] = []  # bound (host, port), after start()

    async def start(self) -> None:
        if self.client is not None:
            if self.factory is None:
                from pinnace.client import InformerFactory

                self.factory = InformerFactory(self.client)
                self._own_factory = True
            r = self.resolver
            self.factory.informer("v1/services").add_handler(
                on_add=r.set_service, on_update=lambda old, new: r.set_service(new), on_delete=r.delete_service)
            self.factory.informer("discovery.k8s.io/v1/endpointslices").add_handler(
                on_add=r.set_slice, on_update=lambda old, new: r.set_slice(new), on_delete=r.delete_slice)
            self.factory.informer("v1/pods").add_handler(
                on_add=r.set_pod, on_update=lambda old, new: r.set_pod(new), on_delete=r.delete_pod)
            await self.factory.start()
        loop = asyncio.get_running_loop()
        for host, port in self.config.listen:
            for attempt in range(20):
                transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                                   local_addr=(host, port))
                bound = transport.get_extra_info("sockname")[:2]
                if not self.config.tcp:
                    break
                try:
                    # The TCP listener takes the port UDP got, so port 0 yields one port for both.
                    self._tcp_servers.append(await asyncio.start_server(self._serve_tcp, host, bound[1]))
                    break
                except OSError:
                    transport.close()
                    if port != 0 or attempt == 19:
                        raise
                    # That port number was free for UDP only; pick another.
            self._transports.append(transport)
            self.addresses.append(bound)
        if self.client is not None:
            await self.factory.wait_synced()

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._tcp_servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._transports.clear()
        self._tcp_servers.clear()
        self.addresses.clear()
        if self._own_factory and self.factory is not None:
            await self.factory.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                try:
                    result = self.resolver.answer(data, udp=False)
                except Exception:
                    log.debug("bad DNS query over TCP", exc_info=True)
                    break
                if not isinstance(result, bytes):
                    result = await self.complete(data, result, udp=False)
                writer.write(struct.pack("!H", len(result)) + result)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def complete(self, data: bytes, pending: Upstream, udp: bool) -> bytes:
        """Answer a query that needs the upstream servers."""
        if pending.partial is None or pending.target is None:
            return await self.forward(data, pending.request)
        question = DNSRecord.question(pending.target, QTYPE[pending.request.q.qtype])
        answer = DNSRecord.parse(await self.forward(bytes(question.pack()), question))
        pending.partial.add_answer(*answer.rr)
        return finish(pending.request, pending.partial, udp)

    async def forward(self, data: bytes, request: DNSRecord) -> bytes:
        """Ask the upstream servers in turn; SERVFAIL when none answers in time."""
        loop = asyncio.get_running_loop()
        for host, port in self.config.upstream or []:
            transport, protocol = await loop.create_datagram_endpoint(_ForwardProtocol, remote_addr=(host, port))
            try:
                transport.sendto(data)
                return await asyncio.wait_for(protocol.answer, self.config.upstream_timeout)
            except (TimeoutError, OSError):
                continue
            finally:
                transport.close()
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()


async def ensure_kube_dns_service(
    client: Any,
    address: str,
    port: int = 53,
    cluster_ip: str = CLUSTER_DNS_IP,
    namespace: str = "kube-system",
) -> None:
    """Create or update `kube-system/kube-dns` (ClusterIP `cluster_ip`, port 53 UDP and TCP, no selector)
    with Endpoints and an EndpointSlice pointing at `address:port`, where this DNS server listens.

    Labelled as Kubernetes labels its DNS Service, so `kubectl cluster-info` lists it.
    """
    from pinnace.client import AlreadyExists, Conflict, NotFound

    labels = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "KubeDNS"}
    with contextlib.suppress(AlreadyExists, Conflict):
        await client.create("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ],
        },
    }
    try:
        current = await client.get("v1/services", "kube-dns", namespace=namespace)
    except NotFound:
        await client.create("v1/services", service, namespace=namespace)
    else:
        if current["spec"].get("ports") != service["spec"]["ports"] or any(
            (current["metadata"].get("labels") or {}).get(k) != v for k, v in labels.items()
        ):
            await client.patch("v1/services", "kube-dns", {"metadata": {"labels": labels},
                                                           "spec": {"ports": service["spec"]["ports"]}},
                               namespace=namespace, patch_type="merge")
    ports = [{"name": "dns", "port": port, "protocol": "UDP"}, {"name": "dns-tcp", "port": port, "protocol": "TCP"}]
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        # We write the EndpointSlice ourselves, so the mirroring controller must leave these alone.
        "metadata": {"name": "kube-dns", "namespace": namespace,
                     "labels": {**labels, "endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": ports}],
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-pinnace",
            "namespace": namespace,
            "labels": {**labels, SERVICE_NAME_LABEL: "kube-dns",
                       "endpointslice.kubernetes.io/managed-by": "dns.pinnace.io"},
        },
        "addressType": "IPv6" if ":" in address else "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": ports,
    }
    for resource, obj in (("v1/endpoints", endpoints), ("discovery.k8s.io/v1/endpointslices", endpoint_slice)):
        try:
            current = await client.get(resource, obj["metadata"]["name"], namespace=namespace)
        except NotFound:
            await client.create(resource, obj, namespace=namespace)
            continue
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        await client.update(resource, obj, namespace=namespace)


__all__ = ["CLUSTER_DNS_IP", "DnsConfig", "DnsServer", "Resolver", "ensure_kube_dns_service", "fqdn",
           "resolv_conf_nameservers"]
