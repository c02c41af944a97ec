"""DefaultPreemption: who is evicted, from which node, and what users read when it cannot help."""

import pytest

from pinnace.scheduler.framework import CycleState, PodInfo
from pinnace.scheduler.plugins.default_preemption import NAME, Candidate, pick_one, split_by_pdb
from pinnace.scheduler.profile import FitError

from .builders import cluster, framework, node, pod, taint


def preempt(nodes, p, placed, pdbs=()):
    handle = cluster(nodes, placed, pdbs=pdbs)
    fw = framework(handle)
    pi = PodInfo(p)
    state = CycleState()
    with pytest.raises(FitError) as info:
        fw.schedule(pi, state)
    nominated, status = fw.run_post_filter(state, pi, info.value.statuses)
    if status is not None:
        info.value.post_filter_message = status.message()
    return nominated, state.get(NAME), info.value.message()


def names(candidate):
    return sorted(v.name for v in candidate.victims)


def test_evicts_lower_priority_pods_on_one_node():
    placed = {"n1": [pod("low1", cpu="2", priority=1), pod("low2", cpu="2", priority=1)],
              "n2": [pod("mid", cpu="4", priority=5)]}
    nominated, candidate, _ = preempt([node("n1"), node("n2")], pod(cpu="2", priority=10), placed)
    assert nominated == "n1" and len(candidate.victims) == 1


def test_prefers_lowest_priority_victims():
    placed = {"n1": [pod("p5", cpu="4", priority=5)], "n2": [pod("p1", cpu="4", priority=1)]}
    nominated, candidate, _ = preempt([node("n1"), node("n2")], pod(cpu="1", priority=10), placed)
    assert nominated == "n2" and names(candidate) == ["p1"]


def test_fewest_victims_among_equal_priority():
    placed = {"n1": [pod("a", cpu="1", priority=1)] + [pod(f"x{i}", cpu="1", priority=1) for i in range(3)],
              "n2": [pod("big", cpu="4", priority=1)]}
    nominated, candidate, _ = preempt([node("n1"), node("n2")], pod(cpu="3", priority=10), placed)
    assert nominated == "n2" and names(candidate) == ["big"]


def test_reprieves_pods_that_can_stay():
    placed = {"n1": [pod("keep", cpu="1", priority=3), pod("go", cpu="3", priority=1)]}
    nominated, candidate, _ = preempt([node("n1")], pod(cpu="3", priority=10), placed)
    assert nominated == "n1" and names(candidate) == ["go"]


def test_higher_or_equal_priority_pods_are_never_victims():
    placed = {"n1": [pod("same", cpu="4", priority=10)], "n2": [pod("higher", cpu="4", priority=20)]}
    nominated, candidate, message = preempt([node("n1"), node("n2")], pod(cpu="1", priority=10), placed)
    assert nominated is None and candidate is None
    assert message == ("0/2 nodes are available: 2 Insufficient cpu. "
                       "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")


def test_unresolvable_nodes_are_not_helped():
    nodes = [node("n1", cpu="1", taints=[taint("dedicated", "db")]), node("n2", cpu="1"), node("n3", cpu="1")]
    _, _, message = preempt(nodes, pod(cpu="2", priority=10), {})
    assert message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu. "
        "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod.")


def test_preemption_policy_never():
    _, _, message = preempt([node("n1", cpu="1")], pod(cpu="2", priority=10, preemption_policy="Never"),
                            {"n1": [pod(cpu="1", priority=0)]})
    assert message.endswith("preemption: not eligible due to preemptionPolicy=Never.")


def test_even_evicting_everything_does_not_help():
    placed = {"n1": [pod("low", cpu="1", priority=0)]}
    _, candidate, message = preempt([node("n1", cpu="2")], pod(cpu="3", priority=10), placed)
    assert candidate is None
    assert message.endswith("preemption: 0/1 nodes are available: 1 Insufficient cpu.")


def test_anti_affinity_victims():
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    placed = {"n1": [pod("w", labels={"app": "web"}, priority=0)]}
    nominated, candidate, _ = preempt([node("n1")], pod(affinity=anti, priority=10), placed)
    assert nominated == "n1" and names(candidate) == ["w"]


def pdb(labels, allowed, namespace="default"):
    return {"metadata": {"name": "pdb", "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels}}, "status": {"disruptionsAllowed": allowed}}


def test_pdbs_are_respected_where_possible():
    placed = {"n1": [pod("guarded", cpu="4", labels={"app": "db"}, priority=1)],
              "n2": [pod("free", cpu="4", labels={"app": "web"}, priority=1)]}
    nominated, candidate, _ = preempt([node("n1"), node("n2")], pod(cpu="2", priority=10), placed,
                                      pdbs=[pdb({"app": "db"}, 0)])
    assert nominated == "n2" and candidate.pdb_violations == 0


def test_pdbs_are_violated_when_nothing_else_helps():
    placed = {"n1": [pod("guarded", cpu="4", labels={"app": "db"}, priority=1)]}
    nominated, candidate, _ = preempt([node("n1")], pod(cpu="2", priority=10), placed, pdbs=[pdb({"app": "db"}, 0)])
    assert nominated == "n1" and candidate.pdb_violations == 1


def test_split_by_pdb_counts_budget():
    pods = [PodInfo(pod(labels={"app": "db"})), PodInfo(pod(labels={"app": "db"})), PodInfo(pod(labels={"app": "x"}))]
    violating, ok = split_by_pdb(pods, [pdb({"app": "db"}, 1)])
    assert len(violating) == 1 and len(ok) == 2


def test_pick_one_orders_by_kubernetes_criteria():
    def cand(node_name, priorities, violations=0):
        return Candidate(node_name, [PodInfo(pod(priority=p)) for p in priorities], violations)

    assert pick_one([cand("a", [1], 1), cand("b", [5, 5])]).node_name == "b"
    assert pick_one([cand("a", [5]), cand("b", [1, 1])]).node_name == "b"
    assert pick_one([cand("a", [1, 1]), cand("b", [1])]).node_name == "b"
