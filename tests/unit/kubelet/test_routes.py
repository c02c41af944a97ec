"""host-gw routes: which other nodes' pod CIDRs get a route, and via which address."""

from __future__ import annotations

from pinnace.kubelet.network.routes import desired_routes


def node(name: str, cidr: str | None, address: str | None, deleting: bool = False) -> dict:
    meta: dict = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "InternalIP", "address": address}] if address else []}}


def test_every_other_node_with_a_cidr_and_an_address_gets_a_route():
    nodes = [
        node("me", "10.42.0.0/24", "192.168.1.10"),
        node("b", "10.42.1.0/24", "192.168.1.11"),
        node("c", "10.42.2.0/24", None),  # no address yet
        node("d", None, "192.168.1.13"),  # no CIDR yet
        node("e", "10.42.4.0/24", "192.168.1.10"),  # on this host (pinnace up --nodes): its bridge is local
        node("f", "10.42.5.0/24", "192.168.1.15", deleting=True),
    ]
    assert desired_routes(nodes, "me", {"192.168.1.10", "127.0.0.1"}) == {"10.42.1.0/24": "192.168.1.11"}
