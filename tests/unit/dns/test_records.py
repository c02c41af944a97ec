"""DNS answers for every record type, from fixture objects (no server, no sockets)."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from pinnace.dns.server import Resolver, Upstream


def svc(name, ns="default", cluster_ip="10.43.0.20", ports=(("http", 80, "TCP"),), **spec):
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": cluster_ip,
                 "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports], **spec},
    }


def slice_(service, ns="default", endpoints=(), ports=(("http", 8080, "TCP"),), name=None):
    return {
        "metadata": {"name": name or f"{service}-abc", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}, **({"hostname": host} if host else {})}
            for ip, ready, host in endpoints
        ],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def pod(name, ip, hostname=None, subdomain=None, ns="default", ready=True):
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {**({"hostname": hostname} if hostname else {}), **({"subdomain": subdomain} if subdomain else {})},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@pytest.fixture
def resolver():
    r = Resolver("cluster.local")
    r.set_service(svc("web"))
    r.set_service(svc("v6", cluster_ip="fd00:43::20"))
    r.set_service(svc("db", cluster_ip="None", ports=(("pg", 5432, "TCP"),)))
    r.set_slice(slice_("db", endpoints=[("10.42.0.5", True, None), ("10.42.0.6", True, "db-1"),
                                         ("10.42.0.7", False, None)], ports=(("pg", 5432, "TCP"),)))
    r.set_service({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "example.com"}})
    r.set_service({"metadata": {"name": "alias", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})
    r.set_pod(pod("db-0", "10.42.0.5", hostname="db-0", subdomain="db"))
    return r


def ask(resolver, name, qtype="A", udp=True):
    query = DNSRecord.question(name, qtype)
    return DNSRecord.parse(resolver.answer(query.pack(), udp=udp))


def answers(reply):
    return sorted(str(rr.rdata) for rr in reply.rr)


@pytest.mark.parametrize("name, qtype, expected", [
    ("web.default.svc.cluster.local", "A", ["10.43.0.20"]),
    ("WEB.Default.svc.cluster.local.", "A", ["10.43.0.20"]),  # names are case-insensitive
    ("v6.default.svc.cluster.local", "AAAA", ["fd00:43::20"]),
    ("_http._tcp.web.default.svc.cluster.local", "SRV", ["0 100 80 web.default.svc.cluster.local."]),
    ("db.default.svc.cluster.local", "A", ["10.42.0.5", "10.42.0.6"]),  # headless: ready endpoints only
    ("db-1.db.default.svc.cluster.local", "A", ["10.42.0.6"]),  # endpoint hostname
    ("db-0.db.default.svc.cluster.local", "A", ["10.42.0.5"]),  # pod hostname + subdomain
    ("10-42-0-9.default.pod.cluster.local", "A", ["10.42.0.9"]),
    ("ext.default.svc.cluster.local", "A", ["example.com."]),
    ("alias.default.svc.cluster.local", "A", ["10.43.0.20", "web.default.svc.cluster.local."]),
    ("20.0.43.10.in-addr.arpa", "PTR", ["web.default.svc.cluster.local."]),
])
def test_answers(resolver, name, qtype, expected):
    reply = ask(resolver, name, qtype)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1
    assert answers(reply) == expected


def test_headless_srv_lists_each_endpoint(resolver):
    reply = ask(resolver, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert answers(reply) == [
        "0 100 5432 db-0.db.default.svc.cluster.local.",
        "0 100 5432 db-1.db.default.svc.cluster.local.",
    ]


def test_unknown_name_in_zone_is_nxdomain_with_soa(resolver):
    reply = ask(resolver, "nope.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert reply.auth and reply.auth[0].rtype == QTYPE.SOA


def test_existing_name_without_that_type_is_nodata(resolver):
    reply = ask(resolver, "web.default.svc.cluster.local", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert ask(resolver, "default.svc.cluster.local").header.rcode == RCODE.NOERROR  # empty non-terminal


def test_names_outside_the_zone_are_refused_without_upstream(resolver):
    assert ask(resolver, "example.org").header.rcode == RCODE.REFUSED


def test_names_outside_the_zone_go_upstream_when_configured():
    r = Resolver("cluster.local", upstream_configured=True)
    pending = r.answer(DNSRecord.question("example.org").pack())
    assert isinstance(pending, Upstream) and pending.partial is None


def test_external_name_target_is_chased_upstream_when_configured():
    r = Resolver("cluster.local", upstream_configured=True)
    r.set_service({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "example.com"}})
    pending = r.answer(DNSRecord.question("ext.default.svc.cluster.local").pack())
    assert isinstance(pending, Upstream) and pending.target == "example.com."
    assert answers(pending.partial) == ["example.com."]


def test_updates_replace_records_and_invalidate_cached_answers(resolver):
    assert answers(ask(resolver, "web.default.svc.cluster.local")) == ["10.43.0.20"]
    resolver.set_service(svc("web", cluster_ip="10.43.0.21"))
    assert answers(ask(resolver, "web.default.svc.cluster.local")) == ["10.43.0.21"]
    resolver.delete_service(svc("web"))
    assert ask(resolver, "web.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN


def test_endpoint_turning_not_ready_leaves_headless_answer(resolver):
    resolver.set_slice(slice_("db", endpoints=[("10.42.0.6", True, "db-1")], ports=(("pg", 5432, "TCP"),)))
    resolver.delete_pod(pod("db-0", "10.42.0.5", hostname="db-0", subdomain="db"))
    assert answers(ask(resolver, "db.default.svc.cluster.local")) == ["10.42.0.6"]


def test_cached_answer_carries_the_new_query_id(resolver):
    first = DNSRecord.question("web.default.svc.cluster.local")
    second = DNSRecord.question("web.default.svc.cluster.local")
    resolver.answer(first.pack())
    reply = DNSRecord.parse(resolver.answer(second.pack()))
    assert reply.header.id == second.header.id


def test_large_udp_answer_is_truncated_but_complete_over_tcp():
    r = Resolver("cluster.local")
    r.set_service(svc("big", cluster_ip="None"))
    r.set_slice(slice_("big", endpoints=[(f"10.42.1.{i}", True, None) for i in range(1, 60)]))
    assert ask(r, "big.default.svc.cluster.local").header.tc == 1
    assert len(ask(r, "big.default.svc.cluster.local", udp=False).rr) == 59
