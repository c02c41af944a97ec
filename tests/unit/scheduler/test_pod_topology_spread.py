"""PodTopologySpread: maxSkew, whenUnsatisfiable, minDomains, node inclusion policies, scoring."""

import pytest

from pinnace.scheduler.framework import CycleState, PodInfo
from pinnace.scheduler.plugins.pod_topology_spread import MISSING_LABEL_REASON, REASON, PodTopologySpread

from .builders import cluster, node, pod, run_filter, run_score, taint

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
WEB = {"app": "web"}


def spread(max_skew=1, key=ZONE, when="DoNotSchedule", labels=WEB, **extra):
    c = {"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": labels}}
    c.update(extra)
    return c


def web(**kw):
    return pod(labels=WEB, **kw)


NODES = [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"), node("c1", zone="c")]


def feasible(p, placed, nodes=NODES):
    handle = cluster(nodes, placed)
    result = run_filter(PodTopologySpread(handle=handle), p, handle)
    return {n for n, r in result.items() if r is None}, result


def test_no_constraints_skip():
    handle = cluster(NODES)
    assert PodTopologySpread(handle=handle).pre_filter(CycleState(), PodInfo(pod())).code == 5


def test_max_skew_one_over_zones():
    ok, result = feasible(web(spread=[spread()]), {"a1": [web()], "b1": [web()]})
    assert ok == {"c1"}
    assert result["a1"] == REASON


def test_max_skew_two_allows_more():
    ok, _ = feasible(web(spread=[spread(2)]), {"a1": [web()], "b1": [web()]})
    assert ok == {"a1", "a2", "b1", "c1"}


def test_pods_not_matching_the_selector_do_not_count():
    ok, _ = feasible(web(spread=[spread()]), {"a1": [pod(labels={"app": "db"})] * 1, "b1": [web()]})
    assert ok == {"a1", "a2", "c1"}


def test_other_namespaces_do_not_count():
    ok, _ = feasible(web(spread=[spread()]), {"b1": [pod(namespace="other", labels=WEB)]})
    assert ok == {"a1", "a2", "b1", "c1"}


def test_incoming_pod_not_matching_itself():
    # The incoming pod does not count itself: skew = count - min.
    ok, _ = feasible(pod(labels={"app": "x"}, spread=[spread()]), {"a1": [web()]})
    assert ok == {"a1", "a2", "b1", "c1"}


def test_node_without_topology_key_is_unresolvable():
    nodes = [*NODES, node("bare")]
    ok, result = feasible(web(spread=[spread()]), {}, nodes)
    assert "bare" not in ok and result["bare"] == MISSING_LABEL_REASON


def test_min_domains_treats_missing_domains_as_zero():
    nodes = [node("a1", zone="a"), node("b1", zone="b")]
    placed = {"a1": [web()], "b1": [web()]}
    ok, _ = feasible(web(spread=[spread()]), placed, nodes)
    assert ok == {"a1", "b1"}  # 1+1-1 = 1 <= 1
    ok, _ = feasible(web(spread=[spread(minDomains=3)]), placed, nodes)
    assert ok == set()  # fewer domains than minDomains: the global minimum is 0


def test_node_affinity_policy_honor_and_ignore():
    nodes = [node("a1", zone="a", labels={"pool": "x"}), node("b1", zone="b", labels={"pool": "x"}),
             node("c1", zone="c", labels={"pool": "y"})]
    placed = {"a1": [web()], "b1": [web()]}
    # Honor (default): zone c is excluded by the nodeSelector, so its 0 does not pull the minimum down
    # (c1 itself passes this filter; NodeAffinity is what rejects it).
    ok, _ = feasible(web(spread=[spread()], node_selector={"pool": "x"}), placed, nodes)
    assert ok == {"a1", "b1", "c1"}
    ok, _ = feasible(web(spread=[spread(nodeAffinityPolicy="Ignore")], node_selector={"pool": "x"}), placed, nodes)
    assert ok == {"c1"}  # only the spread filter runs here; NodeAffinity would reject c1


def test_node_taints_policy():
    nodes = [node("a1", zone="a"), node("b1", zone="b"), node("c1", zone="c", taints=[taint("t", "v")])]
    placed = {"a1": [web()], "b1": [web()]}
    ok, _ = feasible(web(spread=[spread()]), placed, nodes)
    assert ok == {"c1"}  # Ignore (default): tainted zone c counts as a domain with 0
    ok, _ = feasible(web(spread=[spread(nodeTaintsPolicy="Honor")]), placed, nodes)
    assert ok == {"a1", "b1", "c1"}


def test_two_constraints_zone_and_host():
    p = web(spread=[spread(1, ZONE), spread(1, HOST)])
    ok, _ = feasible(p, {"a1": [web()], "b1": [web()], "c1": [web()]})
    assert ok == {"a2"}


def test_match_label_keys():
    p = pod(labels={"app": "web", "rev": "2"}, spread=[spread(matchLabelKeys=["rev"])])
    placed = {"a1": [pod(labels={"app": "web", "rev": "1"})] * 1}
    ok, _ = feasible(p, placed)
    assert ok == {"a1", "a2", "b1", "c1"}  # rev 1 pods are another revision


def test_add_and_remove_pod_extensions():
    handle = cluster(NODES, {"a1": [web()], "b1": [web()]})
    plugin = PodTopologySpread(handle=handle)
    p = PodInfo(web(spread=[spread()]))
    state = CycleState()
    plugin.pre_filter(state, p)
    c1 = handle.snapshot.nodes["c1"]
    a1 = handle.snapshot.nodes["a1"]
    assert plugin.filter(state, p, a1) is not None
    removed = next(iter(a1.pods.values()))
    plugin.remove_pod(state, p, removed, a1)
    assert plugin.filter(state, p, a1) is None
    assert plugin.filter(state, p, c1) is None


def test_schedule_anyway_scores_emptier_domains_higher():
    handle = cluster(NODES, {"a1": [web(), web()], "b1": [web()]})
    scores = run_score(PodTopologySpread(handle=handle), web(spread=[spread(when="ScheduleAnyway")]), handle)
    assert scores["c1"] == 100
    assert scores["c1"] > scores["b1"] > scores["a1"] == scores["a2"]


def test_schedule_anyway_on_hostname():
    handle = cluster(NODES, {"a1": [web(), web()], "b1": [web()]})
    scores = run_score(PodTopologySpread(handle=handle), web(spread=[spread(key=HOST, when="ScheduleAnyway")]), handle)
    assert scores["a2"] == scores["c1"] == 100
    assert scores["a1"] < scores["b1"] < 100


def test_schedule_anyway_ignores_nodes_without_the_key():
    nodes = [*NODES, node("bare")]
    handle = cluster(nodes, {"a1": [web()]})
    scores = run_score(PodTopologySpread(handle=handle), web(spread=[spread(when="ScheduleAnyway")]), handle)
    assert scores["bare"] == 0


def test_do_not_schedule_constraints_do_not_score():
    handle = cluster(NODES)
    assert PodTopologySpread(handle=handle).pre_score(CycleState(), PodInfo(web(spread=[spread()])), []).code == 5


# ---- Per-domain counts kept by the cache as pods come and go must equal counting from scratch.

def _placed(p, node_name):
    return PodInfo({**p, "spec": {**p["spec"], "nodeName": node_name}})


def _counts_from_scratch(cache):
    """Matching pods per zone, counted pod by pod over the nodes that carry the zone label."""
    counts = {}
    for info in cache.nodes.values():
        zone = info.labels.get(ZONE)
        if zone is None:
            continue
        counts.setdefault(zone, 0)
        for pi in info.pods.values():
            if pi.namespace == "default" and pi.labels.get("app") == "web":
                counts[zone] += 1
    return counts


W1, W2, W3, DB = web(), web(), web(), pod(labels={"app": "db"})


@pytest.mark.parametrize("steps", [
    # (operation, argument, ...) applied in order to a cache that already counted once
    [("add", W1, "a1"), ("add", W2, "b1")],
    [("assume", W1, "a1"), ("assume", W2, "a2"), ("forget", W1)],
    [("add", W1, "a1"), ("add", W2, "a1"), ("remove", W1)],
    [("add", W1, "a1"), ("add", DB, "b1"), ("remove", DB)],
    [("add", W1, "a1"), ("relabel", "a1", "c"), ("add", W2, "a1")],
    [("add", W1, "a1"), ("remove_node", "a1"), ("add", W2, "b1")],
    [("add", W1, "late"), ("add_node", "late", "b"), ("add", W2, "late")],
    [("add", W1, "a1"), ("relabel", "a1", None), ("add", W2, "a1"), ("relabel", "a1", "a")],
])
def test_cached_domain_counts_follow_pod_and_node_changes(steps):
    handle = cluster(NODES)
    cache = handle.snapshot
    plugin = PodTopologySpread(handle=handle)
    incoming = PodInfo(web(spread=[spread()]))

    def counts():
        state = CycleState()
        plugin.pre_filter(state, incoming)
        return state["PodTopologySpread"].counts[0]

    counts()  # the cache now keeps this group's per-zone counts and updates them from here on
    infos = {}
    for step in steps:
        op, *args = step
        if op in ("add", "assume"):
            p, node_name = args
            infos[id(p)] = pi = _placed(p, node_name)
            cache.add_pod(pi) if op == "add" else cache.assume_pod(pi, node_name)
        elif op == "forget":
            cache.forget_pod(infos[id(args[0])])
        elif op == "remove":
            cache.remove_pod(infos[id(args[0])].uid)
        elif op in ("relabel", "add_node"):
            cache.update_node(node(args[0], zone=args[1]))
        elif op == "remove_node":
            cache.remove_node(args[0])
        counts()  # exercise the incremental path after every step
    assert counts() == _counts_from_scratch(cache)
