"""iptables mode against the kernel, inside network namespaces the tests create (root only)."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

from pinnace.proxy.iptables import IptablesProxier, RenderOptions
from pinnace.proxy.model import Endpoint, ServicePort
from pinnace.proxy.netns_lab import Lab, sh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-restore"), reason="needs root and iptables"),
]

CLUSTER_IP = "10.43.200.10"
PORT = 8080
# 300 draws over 3 equally likely backends: chi-square with 2 degrees of freedom. 18.42 is the
# p=0.0001 critical value, so a fair spread fails once in 10,000 runs while a skewed one (e.g. 150/100/50,
# chi-square 50) or a single backend (600) can never pass.
CHI_SQUARE_LIMIT = 18.42


def chi_square(counts: dict[str, int], backends: list[str], total: int) -> float:
    expected = total / len(backends)
    return sum((counts.get(b, 0) - expected) ** 2 / expected for b in backends)


def service(lab: Lab, *, ready: int | None = None, protocol: str = "TCP", affinity: int | None = None,
            node_port: int | None = None, ips: list[str] | None = None, external_ips: tuple = ()) -> ServicePort:
    ips = ips if ips is not None else lab.backend_ips
    eps = tuple(Endpoint(ip, PORT, ready is None or i < ready, "node-a") for i, ip in enumerate(ips))
    return ServicePort("default", "web", "http", protocol, CLUSTER_IP, 80, node_port=node_port,
                       external_ips=external_ips, session_affinity_seconds=affinity, endpoints=eps)


@pytest.fixture(params=["endpoint-chains", "inline"])
async def lab(request):
    """A lab per rule layout: kube-proxy's per-endpoint chains, and the large-cluster inline DNATs."""
    lab = Lab.create(backends=3)
    limit = 1000 if request.param == "endpoint-chains" else 0
    proxier = IptablesProxier(RenderOptions(node_name="node-a", endpoint_chain_limit=limit), netns=lab.node)
    try:
        lab.serve(PORT)
        lab.proxier = proxier  # type: ignore[attr-defined]
        yield lab
    finally:
        try:
            await proxier.cleanup()
        finally:
            lab.close()


async def test_connections_spread_over_every_ready_backend(lab):
    await lab.proxier.sync([service(lab)])
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "300")
    counts = result["counts"]
    assert result["errors"] == 0, counts
    assert set(counts) == set(lab.backend_ips)
    assert chi_square(counts, lab.backend_ips, 300) < CHI_SQUARE_LIMIT, counts


async def test_node_itself_reaches_cluster_ip(lab):
    await lab.proxier.sync([service(lab)])
    result = lab.run_client(lab.node, "connect", CLUSTER_IP, "80", "30")
    assert result["errors"] == 0 and set(result["counts"]) <= set(lab.backend_ips)


async def test_client_ip_affinity_pins_a_client_to_one_backend(lab):
    await lab.proxier.sync([service(lab, affinity=60)])
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "40")
    assert result["errors"] == 0
    assert len(result["counts"]) == 1, result


async def test_not_ready_backend_stops_getting_connections(lab):
    await lab.proxier.sync([service(lab)])
    started = time.monotonic()
    await lab.proxier.sync([service(lab, ready=2)])
    assert time.monotonic() - started < 1.0
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "60")
    assert result["errors"] == 0
    assert set(result["counts"]) == set(lab.backend_ips[:2])


async def test_service_without_ready_endpoints_refuses_at_once(lab):
    await lab.proxier.sync([service(lab, ready=0)])
    started = time.monotonic()
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "3")
    assert result["counts"] == {"ConnectionRefusedError": 3}
    assert time.monotonic() - started < 2.0  # refused, not timed out


async def test_node_port_from_the_node_and_from_a_client(lab):
    await lab.proxier.sync([service(lab, node_port=30080)])
    for netns in (lab.node, lab.client):
        result = lab.run_client(netns, "connect", lab.node_ip, "30080", "20")
        assert result["errors"] == 0, (netns, result)
        assert set(result["counts"]) <= set(lab.backend_ips)


async def test_external_ip(lab):
    await lab.proxier.sync([service(lab, external_ips=("192.0.2.7",))])
    result = lab.run_client(lab.client, "connect", "192.0.2.7", "80", "10")
    assert result["errors"] == 0 and set(result["counts"]) <= set(lab.backend_ips), result


async def test_udp_service_and_stale_conntrack_flush(lab):
    # One source port throughout: without the conntrack flush, the entry made for the first backend
    # (which keeps running) would keep carrying this client's datagrams there.
    udp = ("udp", CLUSTER_IP, "80", "5", "--source-port", "40123")
    await lab.proxier.sync([service(lab, protocol="UDP", ips=lab.backend_ips[:1])])
    assert lab.run_client(lab.client, *udp)["counts"] == {lab.backend_ips[0]: 5}
    await lab.proxier.sync([service(lab, protocol="UDP", ips=lab.backend_ips[1:2])])
    assert lab.run_client(lab.client, *udp)["counts"] == {lab.backend_ips[1]: 5}


async def test_cleanup_removes_every_rule(lab):
    await lab.proxier.sync([service(lab, node_port=30080)])
    assert "PINNACE-" in sh("iptables-save", netns=lab.node).stdout
    await lab.proxier.cleanup()
    assert "PINNACE" not in sh("iptables-save", netns=lab.node).stdout


@pytest.fixture(params=[True, False], ids=["masquerade-all", "br-netfilter"])
async def bridged_lab(request):
    lab = Lab.create(backends=3, bridge=True)
    if not request.param:
        # Bridged traffic through iptables makes masquerading pod-to-pod service traffic unnecessary.
        if sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns=lab.node, check=False).returncode:
            lab.close()
            pytest.skip("br_netfilter is not available")
    proxier = IptablesProxier(RenderOptions(node_name="node-a"), netns=lab.node, masquerade_all=request.param)
    try:
        lab.serve(PORT)
        lab.proxier = proxier  # type: ignore[attr-defined]
        yield lab
    finally:
        try:
            await proxier.cleanup()
        finally:
            lab.close()


async def test_pods_on_one_bridge_reach_each_other_and_themselves_through_the_service(bridged_lab):
    """Replies between pods on one bridge skip the node's NAT unless bridged traffic goes through
    iptables (br_netfilter) or the connection was masqueraded: both set-ups must work."""
    lab = bridged_lab
    await lab.proxier.sync([service(lab)])
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "30")
    assert result["errors"] == 0 and set(result["counts"]) == set(lab.backend_ips), result
    # Hairpin: a backend reaching its own Service lands on itself. (The lab's backends share one
    # namespace, so only the backend itself is a faithful target here.)
    await lab.proxier.sync([service(lab, ips=lab.backend_ips[:1])])
    result = lab.run_client(lab.backend, "connect", CLUSTER_IP, "80", "10", "--source", lab.backend_ips[0])
    assert result["counts"] == {lab.backend_ips[0]: 10}, result


async def test_pinnace_proxy_cleanup_command(lab):
    await lab.proxier.sync([service(lab, node_port=30080)])
    out = sh(sys.executable, "-m", "pinnace.cli.main", "proxy", "--cleanup", "--mode", "iptables", netns=lab.node)
    assert "removed" in out.stdout
    assert "PINNACE" not in sh("iptables-save", netns=lab.node).stdout


async def test_external_traffic_policy_local_uses_only_this_nodes_endpoints(lab):
    eps = tuple(Endpoint(ip, PORT, True, "node-a" if i == 0 else "node-b") for i, ip in enumerate(lab.backend_ips))
    sp = ServicePort("default", "web", "http", "TCP", CLUSTER_IP, 80, node_port=30081, external_local=True,
                     endpoints=eps)
    await lab.proxier.sync([sp])
    result = lab.run_client(lab.client, "connect", lab.node_ip, "30081", "20")
    assert result["counts"] == {lab.backend_ips[0]: 20}
    result = lab.run_client(lab.client, "connect", CLUSTER_IP, "80", "30")  # ClusterIP: every endpoint
    assert set(result["counts"]) == set(lab.backend_ips)
