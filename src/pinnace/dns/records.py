"""Cluster DNS records, computed from Services, EndpointSlices and Pods (pure, no I/O).

The records follow the Kubernetes DNS specification (as CoreDNS's kubernetes plugin serves it):

- `<svc>.<ns>.svc.<zone>`: A/AAAA of the ClusterIP(s); for a headless Service (`clusterIP: None`)
  the addresses of its ready endpoints (all endpoints with `publishNotReadyAddresses`);
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for each named port; the target is the Service
  name, or for a headless Service one target per endpoint, `<hostname>.<svc>.<ns>.svc.<zone>`
  (the endpoint's hostname, or its IP with dashes);
- `<hostname>.<svc>.<ns>.svc.<zone>`: A/AAAA for endpoints with a hostname and for pods whose
  `spec.hostname` and `spec.subdomain` name a headless Service in their namespace;
- ExternalName Services: a CNAME to `spec.externalName`;
- `<a-b-c-d>.<ns>.pod.<zone>`: answered from the name itself, as CoreDNS's `pods insecure` mode;
- PTR records for ClusterIPs and headless endpoint addresses.

A `RecordTable` holds the records keyed by owner (one Service with everything derived from it), so
that an informer event recomputes one Service's records and answering is a dictionary lookup.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping

from dnslib import AAAA, CNAME, PTR, QTYPE, RR, SOA, SRV, A, DNSLabel

TTL = 5  # seconds, CoreDNS's default for cluster records: short, because endpoints churn


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def address_record(name: str, ip: str, ttl: int = TTL) -> RR:
    if ":" in ip:
        return RR(name, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl)
    return RR(name, QTYPE.A, rdata=A(ip), ttl=ttl)


def ptr_record(ip: str, target: str, ttl: int = TTL) -> RR:
    return RR(ipaddress.ip_address(ip).reverse_pointer + ".", QTYPE.PTR, rdata=PTR(target), ttl=ttl)


def dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _pod_ready(pod: Mapping) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _pod_ips(pod: Mapping) -> list[str]:
    status = pod.get("status") or {}
    ips = [p["ip"] for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


def service_records(
    service: Mapping,
    slices: Iterable[Mapping] = (),
    pods: Iterable[Mapping] = (),
    zone: str = "cluster.local",
) -> list[RR]:
    """Every record a Service contributes (its name, SRV, endpoint and pod hostnames, PTRs)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    name = fqdn(f"{meta['name']}.{namespace}.svc.{zone}")
    records: list[RR] = []
    if spec.get("type") == "ExternalName":
        target = spec.get("externalName")
        if target:
            records.append(RR(name, QTYPE.CNAME, rdata=CNAME(fqdn(target)), ttl=TTL))
        return records

    ports = [p for p in spec.get("ports") or [] if p.get("name")]
    cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
    if cluster_ips:
        for ip in cluster_ips:
            records.append(address_record(name, ip))
            records.append(ptr_record(ip, name))
        for port in ports:
            srv_name = f"_{port['name']}._{(port.get('protocol') or 'TCP').lower()}.{name}"
            records.append(RR(srv_name, QTYPE.SRV, rdata=SRV(0, 100, int(port["port"]), name), ttl=TTL))
        return records

    # Headless: the endpoints themselves.
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    targets: dict[str, str] = {}  # ip -> target name
    slice_ports: dict[tuple[str, str], int] = {}
    for eps in slices:
        for p in eps.get("ports") or []:
            if p.get("name") and p.get("port"):
                slice_ports[(p["name"], p.get("protocol") or "TCP")] = int(p["port"])
        for ep in eps.get("endpoints") or []:
            ready = (ep.get("conditions") or {}).get("ready") is not False
            if not ready and not publish_not_ready:
                continue
            for ip in ep.get("addresses") or []:
                host = ep.get("hostname") or dashed(ip)
                targets.setdefault(ip, fqdn(f"{host}.{name}"))
    for pod in pods:
        pod_spec = pod.get("spec") or {}
        if pod_spec.get("subdomain") != meta["name"] or not pod_spec.get("hostname"):
            continue
        if not (publish_not_ready or _pod_ready(pod)):
            continue
        for ip in _pod_ips(pod):
            targets[ip] = fqdn(f"{pod_spec['hostname']}.{name}")
    for ip, target in sorted(targets.items()):
        records.append(address_record(name, ip))
        records.append(address_record(target, ip))
        records.append(ptr_record(ip, target))
    for port in ports:
        protocol = port.get("protocol") or "TCP"
        # The SRV port is the endpoints' port (targetPort), as CoreDNS answers for headless Services.
        number = slice_ports.get((port["name"], protocol))
        if number is None:
            target_port = port.get("targetPort")
            number = int(target_port) if isinstance(target_port, int) else int(port["port"])
        srv_name = f"_{port['name']}._{protocol.lower()}.{name}"
        for target in sorted(set(targets.values())):
            records.append(RR(srv_name, QTYPE.SRV, rdata=SRV(0, 100, number, target), ttl=TTL))
    return records


def pod_address(name: str, zone: str = "cluster.local") -> str | None:
    """The IP named by `<a-b-c-d>.<ns>.pod.<zone>.`, or None."""
    suffix = f".pod.{fqdn(zone)}"
    if not name.endswith(suffix):
        return None
    labels = name[: -len(suffix)].split(".")
    if len(labels) != 2:
        return None
    text = labels[0]
    candidates = [text.replace("-", ".")] if text.count("-") == 3 else []
    candidates.append(text.replace("-", ":"))
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


class RecordTable:
    """Records by (name, type), maintained per owner so one object's change is one replace()."""

    def __init__(self, zone: str = "cluster.local") -> None:
        self.zone = fqdn(zone)
        self.rrsets: dict[str, dict[int, list[RR]]] = {}
        self.names: Counter[str] = Counter()  # every name with records, and its ancestors in the zone
        self.owners: dict[str, list[RR]] = {}
        self.generation = 0  # bumped on every change, so cached answers can be invalidated
        self.soa = RR(self.zone, QTYPE.SOA, ttl=TTL, rdata=SOA(
            f"ns.dns.{self.zone}", f"hostmaster.{self.zone}", (1, 7200, 1800, 86400, TTL)))
        self._add(self.soa)

    def _ancestors(self, name: str) -> Iterable[str]:
        yield name
        while name != self.zone and "." in name[:-1]:
            name = name.split(".", 1)[1]
            if not name.endswith(self.zone) and name != self.zone:
                break
            yield name

    def _add(self, rr: RR) -> None:
        name = str(rr.rname).lower()
        self.rrsets.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)
        for ancestor in self._ancestors(name):
            self.names[ancestor] += 1

    def _remove(self, rr: RR) -> None:
        name = str(rr.rname).lower()
        by_type = self.rrsets.get(name, {})
        rrs = by_type.get(rr.rtype, [])
        if rr in rrs:
            rrs.remove(rr)
            if not rrs:
                del by_type[rr.rtype]
            if not by_type:
                self.rrsets.pop(name, None)
            for ancestor in self._ancestors(name):
                self.names[ancestor] -= 1
                if self.names[ancestor] <= 0:
                    del self.names[ancestor]

    def replace(self, owner: str, records: list[RR]) -> None:
        old = self.owners.get(owner, [])
        if [str(r) for r in old] == [str(r) for r in records]:
            return
        for rr in old:
            self._remove(rr)
        for rr in records:
            self._add(rr)
        if records:
            self.owners[owner] = records
        else:
            self.owners.pop(owner, None)
        self.generation += 1

    def in_zone(self, name: str) -> bool:
        return name == self.zone or name.endswith("." + self.zone)

    def lookup(self, name: str, qtype: int) -> tuple[bool, list[RR]]:
        """(name exists, answer records); a CNAME answers any type, as DNS requires."""
        name = name.lower()
        by_type = self.rrsets.get(name)
        if by_type is None:
            ip = pod_address(name, self.zone.rstrip("."))
            if ip is not None:
                rr = address_record(name, ip)
                return True, [rr] if qtype in (rr.rtype, QTYPE.ANY) else []
            return name in self.names, []
        if qtype == QTYPE.ANY:
            return True, [rr for rrs in by_type.values() for rr in rrs]
        if qtype in by_type:
            return True, list(by_type[qtype])
        if QTYPE.CNAME in by_type:
            return True, list(by_type[QTYPE.CNAME])
        return True, []


__all__ = ["DNSLabel", "RecordTable", "fqdn", "pod_address", "service_records"]
