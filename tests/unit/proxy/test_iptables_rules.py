"""Rule generation for iptables mode: pure Services -> iptables-restore text."""

from __future__ import annotations

import re
import time

import pytest

from pinnace.proxy.iptables import RenderOptions, chain_name, parse_save, render, restore_text
from pinnace.proxy.model import Endpoint, ServicePort

SP_ID = "default/web:http/TCP"


def sp(n=3, ready=None, **kwargs) -> ServicePort:
    eps = tuple(Endpoint(f"10.42.0.{i + 2}", 8080, ready is None or i < ready, kwargs.pop("nodes", [None] * n)[i])
                for i in range(n)) if "endpoints" not in kwargs else kwargs.pop("endpoints")
    defaults = dict(namespace="default", name="web", port_name="http", protocol="TCP", cluster_ip="10.43.0.5", port=80)
    return ServicePort(**{**defaults, **kwargs}, endpoints=eps)


def nat(service_ports, **options):
    return render(service_ports, RenderOptions(**options))["nat"]


def test_random_cascade_gives_each_endpoint_an_equal_share():
    rules = nat([sp(4)])[chain_name("SVC", SP_ID)]
    probabilities = [float(p) for r in rules for p in re.findall(r"--probability (\S+)", r)]
    assert probabilities == pytest.approx([1 / 4, 1 / 3, 1 / 2])
    assert "statistic" not in rules[-1]  # the last endpoint takes whatever is left
    share, left = [], 1.0
    for p in [*probabilities, 1.0]:
        share.append(left * p)
        left -= left * p
    assert share == pytest.approx([0.25] * 4)


def test_each_endpoint_chain_dnats_to_its_endpoint():
    [dnat] = nat([sp(2)])[chain_name("SEP", f"{SP_ID}/10.42.0.2:8080")]
    assert dnat == "-p tcp -j DNAT --to-destination 10.42.0.2:8080"


def test_hairpin_masquerade_when_not_masquerading_everything():
    sep = nat([sp(2)], masquerade_all=False)[chain_name("SEP", f"{SP_ID}/10.42.0.2:8080")]
    assert sep == ("-s 10.42.0.2/32 -j PINNACE-MARK-MASQ", "-p tcp -j DNAT --to-destination 10.42.0.2:8080")


def test_large_clusters_inline_the_endpoint_dnats():
    chains = nat([sp(3)], endpoint_chain_limit=2)
    assert not any(c.startswith("PINNACE-SEP-") for c in chains)
    assert chains[chain_name("SVC", SP_ID)] == (
        "-m statistic --mode random --probability 0.3333333333 -p tcp -j DNAT --to-destination 10.42.0.2:8080",
        "-m statistic --mode random --probability 0.5000000000 -p tcp -j DNAT --to-destination 10.42.0.3:8080",
        "-p tcp -j DNAT --to-destination 10.42.0.4:8080",
    )


def test_inline_affinity_refreshes_and_records_the_chosen_endpoint():
    rules = nat([sp(2, session_affinity_seconds=60)], endpoint_chain_limit=0)[chain_name("SVC", SP_ID)]
    name = chain_name("SEP", f"{SP_ID}/10.42.0.2:8080")
    assert rules[0] == (f"-m recent --name {name} --update --seconds 60 --reap --rsource "
                        "-p tcp -j DNAT --to-destination 10.42.0.2:8080")
    assert rules[2] == (f"-m statistic --mode random --probability 0.5000000000 -m recent --name {name} --set "
                        "--rsource -p tcp -j DNAT --to-destination 10.42.0.2:8080")


def test_cluster_ip_jumps_to_service_chain():
    services = nat([sp(2)])["PINNACE-SERVICES"]
    assert any("-d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j PINNACE-SVC-" in r for r in services)
    assert services[-1] == "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PINNACE-NODEPORTS"


def test_only_ready_endpoints_are_programmed():
    chains = nat([sp(3, ready=1)])
    assert len(chains[chain_name("SVC", SP_ID)]) == 1
    assert not any(c.startswith("PINNACE-SEP-") and c != chain_name("SEP", f"{SP_ID}/10.42.0.2:8080")
                   for c in chains)


def test_service_without_ready_endpoints_is_rejected():
    rules = render([sp(2, ready=0, node_port=30080)], RenderOptions())
    assert chain_name("SVC", SP_ID) not in rules["nat"]
    [reject] = rules["filter"]["PINNACE-SERVICES"]
    assert "-d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j REJECT" in reject
    [node_port_reject] = rules["filter"]["PINNACE-EXTERNAL-SERVICES"]
    assert "--dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT" in node_port_reject


def test_client_ip_affinity_checks_recent_before_random_choice():
    chains = nat([sp(2, session_affinity_seconds=600)])
    rules = chains[chain_name("SVC", SP_ID)]
    sep = chain_name("SEP", f"{SP_ID}/10.42.0.2:8080")
    assert rules[0] == f"-m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}"
    assert "statistic" in rules[2]
    assert chains[sep] == (f"-p tcp -m recent --name {sep} --set --rsource -j DNAT --to-destination 10.42.0.2:8080",)


def test_node_port_goes_through_masquerade_then_service_chain():
    chains = nat([sp(2, node_port=30080)])
    ext = chain_name("EXT", SP_ID)
    assert any(r.endswith(f"-p tcp -m tcp --dport 30080 -j {ext}") for r in chains["PINNACE-NODEPORTS"])
    assert chains[ext] == ("-j PINNACE-MARK-MASQ", f"-j {chain_name('SVC', SP_ID)}")


def test_external_traffic_policy_local_keeps_client_address_and_uses_local_endpoints():
    chains = nat([sp(2, node_port=30080, external_local=True, nodes=["me", "other"])], node_name="me")
    ext = chains[chain_name("EXT", SP_ID)]
    assert ext[-1] == f"-j {chain_name('SVL', SP_ID)}"
    assert "-j PINNACE-MARK-MASQ" not in ext  # only node-local sources are masqueraded
    [local] = chains[chain_name("SVL", SP_ID)]
    assert local == f"-j {chain_name('SEP', f'{SP_ID}/10.42.0.2:8080')}"


def test_internal_traffic_policy_local_uses_only_local_endpoints():
    chains = nat([sp(2, internal_local=True, nodes=["me", "other"])], node_name="me")
    jump = [r for r in chains["PINNACE-SERVICES"] if "-j PINNACE-SVL-" in r]
    assert jump and "10.43.0.5" in jump[0]
    rules = render([sp(2, internal_local=True, nodes=["a", "b"])], RenderOptions(node_name="me"))
    assert "REJECT" in rules["filter"]["PINNACE-SERVICES"][0]  # no local endpoint: refuse


def test_external_ips_udp_and_sctp():
    chains = nat([sp(1, protocol="UDP", external_ips=("192.0.2.7",)), sp(1, protocol="SCTP", port_name="s")])
    services = "\n".join(chains["PINNACE-SERVICES"])
    assert "-d 192.0.2.7/32 -p udp -m udp --dport 80 -j PINNACE-EXT-" in services
    assert "-p sctp -m sctp --dport 80" in services


def test_masquerade_only_off_cluster_sources_when_asked():
    chains = nat([sp(1)], masquerade_all=False, cluster_cidr="10.42.0.0/16")
    assert any("! -s 10.42.0.0/16 -d 10.43.0.5/32" in r and r.endswith("PINNACE-MARK-MASQ")
               for r in chains["PINNACE-SERVICES"])


def test_incremental_restore_rewrites_only_changed_chains_and_deletes_stale_ones():
    before = render([sp(3), sp(1, name="other")], RenderOptions())
    after = render([sp(2), sp(1, name="other")], RenderOptions())
    text = restore_text(after, before)
    assert chain_name("SVC", "default/other:http/TCP") not in text
    gone = chain_name("SEP", f"{SP_ID}/10.42.0.4:8080")
    assert f":{gone} - [0:0]" in text and f"-X {gone}" in text
    assert restore_text(after, after) == ""


def test_parse_save_finds_our_chains_and_jumps():
    chains, jumps = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:PINNACE-SERVICES - [0:0]\n"
        '-A PREROUTING -m comment --comment "pinnace service portals" -j PINNACE-SERVICES\nCOMMIT\n')
    assert chains["nat"] == {"PINNACE-SERVICES"}
    assert jumps["nat"] == [("PREROUTING", '-m comment --comment "pinnace service portals" -j PINNACE-SERVICES')]


def test_chain_names_fit_iptables_limit():
    assert len(chain_name("SEP", "x" * 300)) <= 28


def test_rendering_1000_services_with_10_endpoints_is_fast():
    ports = [ServicePort("ns", f"svc-{i}", "http", "TCP", f"10.43.{i // 250}.{i % 250 + 1}", 80,
                         endpoints=tuple(Endpoint(f"10.42.{i % 200}.{j + 1}", 8080) for j in range(10)))
             for i in range(1000)]
    started = time.perf_counter()
    text = restore_text(render(ports, RenderOptions()))
    assert time.perf_counter() - started < 1.0
    assert text.count("-j DNAT") == 10_000
    assert "PINNACE-SEP-" not in text  # past the endpoint chain limit
