"""What the proxy serves: Services and their endpoints reduced to plain, hashable values.

Both proxy modes consume the same `ServicePort` list, built here from Service, EndpointSlice and
(as a fallback) Endpoints objects, so that the two modes cannot disagree about which endpoints are
eligible. The rules match kube-proxy:

- one `ServicePort` per port of a Service of type ClusterIP, NodePort or LoadBalancer with a real
  ClusterIP; headless Services (`clusterIP: None`) and ExternalName Services are left to DNS;
- endpoints come from every EndpointSlice labelled `kubernetes.io/service-name: <svc>` and are
  matched to the Service port by port name; an endpoint counts as ready when `conditions.ready`
  is true or absent (as the EndpointSlice API defines it);
- when a Service has no EndpointSlice at all (a selector-less Service whose user-written
  Endpoints were not mirrored, for instance) its `v1/Endpoints` object is read instead; only
  `addresses` count as ready, `notReadyAddresses` never get traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    node_name: str | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of one Service: the unit the proxy programs (kube-proxy's ServicePortName)."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    cluster_ip: str | None
    port: int
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    session_affinity_seconds: int | None = None  # None: no ClientIP affinity
    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def id(self) -> str:
        """Stable identity, e.g. `default/web:http/TCP`; chain names and annotations derive from it."""
        return f"{self.namespace}/{self.name}:{self.port_name}/{self.protocol}"

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)

    def local_ready_endpoints(self, node_name: str | None) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready and e.node_name == node_name)

    def cluster_endpoints(self, node_name: str | None) -> tuple[Endpoint, ...]:
        """Endpoints for traffic to the ClusterIP, honouring internalTrafficPolicy."""
        if self.internal_local:
            return self.local_ready_endpoints(node_name)
        return self.ready_endpoints

    def external_endpoints(self, node_name: str | None) -> tuple[Endpoint, ...]:
        """Endpoints for NodePort and externalIP traffic, honouring externalTrafficPolicy."""
        if self.external_local:
            return self.local_ready_endpoints(node_name)
        return self.ready_endpoints


def _has_cluster_ip(spec: Mapping) -> bool:
    ip = spec.get("clusterIP")
    return bool(ip) and ip != "None"


def _slice_endpoints(slices: Iterable[Mapping], port_name: str, protocol: str) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for eps in slices:
        if eps.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        port_number = None
        for p in eps.get("ports") or []:
            if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol:
                port_number = p.get("port")
                break
        if port_number is None:
            continue
        for ep in eps.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            ready = conditions.get("ready") is not False  # absent means ready (API contract)
            for ip in ep.get("addresses") or []:
                key = (ip, int(port_number))
                # A duplicate address in two slices counts as ready when either says so, as kube-proxy.
                if key in seen and seen[key].ready:
                    continue
                seen[key] = Endpoint(ip, int(port_number), ready, ep.get("nodeName"))
    return sorted(seen.values(), key=lambda e: (e.ip, e.port))


def _endpoints_object_endpoints(endpoints: Mapping, port_name: str, protocol: str) -> list[Endpoint]:
    found: dict[tuple[str, int], Endpoint] = {}
    for subset in endpoints.get("subsets") or []:
        port_number = None
        for p in subset.get("ports") or []:
            if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol:
                port_number = p.get("port")
                break
        if port_number is None:
            continue
        for ready, addresses in ((True, subset.get("addresses")), (False, subset.get("notReadyAddresses"))):
            for address in addresses or []:
                key = (address["ip"], int(port_number))
                if key not in found or ready:
                    found[key] = Endpoint(address["ip"], int(port_number), ready, address.get("nodeName"))
    return sorted(found.values(), key=lambda e: (e.ip, e.port))


def service_ports(
    service: Mapping,
    slices: Iterable[Mapping] = (),
    endpoints: Mapping | None = None,
) -> list[ServicePort]:
    """The `ServicePort`s of one Service, given its EndpointSlices and (fallback) Endpoints."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName" or not _has_cluster_ip(spec):
        return []
    slices = list(slices)
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or 10800)  # Kubernetes' default: 3 hours
    has_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    result = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            continue
        port_name = port.get("name") or ""
        if slices:
            eps = _slice_endpoints(slices, port_name, protocol)
        elif endpoints is not None:
            eps = _endpoints_object_endpoints(endpoints, port_name, protocol)
        else:
            eps = []
        result.append(
            ServicePort(
                namespace=meta.get("namespace") or "default",
                name=meta["name"],
                port_name=port_name,
                protocol=protocol,
                cluster_ip=spec["clusterIP"],
                port=int(port["port"]),
                node_port=int(port["nodePort"]) if has_node_ports and port.get("nodePort") else None,
                external_ips=tuple(spec.get("externalIPs") or ()),
                session_affinity_seconds=affinity,
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                external_local=spec.get("externalTrafficPolicy") == "Local",
                endpoints=tuple(eps),
            )
        )
    return result


def build_service_ports(
    services: Iterable[Mapping],
    slices: Iterable[Mapping],
    endpoints: Iterable[Mapping] = (),
) -> list[ServicePort]:
    """Every `ServicePort` of a cluster, from whole lists of objects (what a sync reads from caches)."""
    slices_by_service: dict[str, list[Mapping]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        service_name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service_name:
            slices_by_service.setdefault(f"{meta.get('namespace')}/{service_name}", []).append(s)
    endpoints_by_service = {
        f"{(e.get('metadata') or {}).get('namespace')}/{e['metadata']['name']}": e for e in endpoints
    }
    result: list[ServicePort] = []
    for svc in services:
        meta = svc.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        result.extend(service_ports(svc, slices_by_service.get(key, ()), endpoints_by_service.get(key)))
    result.sort(key=lambda sp: sp.id)
    return result
