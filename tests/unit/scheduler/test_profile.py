"""A whole scheduling cycle through a profile: filters, scores, the FitError message, configuration."""

import pytest

from pinnace.scheduler.framework import PodInfo, Status, unschedulable
from pinnace.scheduler.profile import (
    FitError,
    SchedulerConfig,
    fit_error_message,
    num_feasible_nodes_to_find,
    resolve_plugins,
)

from .builders import cluster, framework, node, pod, taint

DB = taint("dedicated", "db")


def schedule(nodes, p, placed=None, **kw):
    fw = framework(cluster(nodes, placed), **kw)
    return fw.schedule(PodInfo(p)).node_name


def fit_message(nodes, p, placed=None, **kw):
    fw = framework(cluster(nodes, placed), **kw)
    with pytest.raises(FitError) as info:
        fw.schedule(PodInfo(p))
    return info.value.message()


def test_the_kubernetes_message_for_taints_and_cpu():
    nodes = [node("n1", cpu="1", taints=[DB]), node("n2", cpu="1"), node("n3", cpu="1")]
    assert fit_message(nodes, pod(cpu="2")) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu.")


def test_histogram_counts_every_reason_of_a_node():
    nodes = [node("n1", cpu="1", memory="1Gi"), node("n2", cpu="1")]
    assert fit_message(nodes, pod(cpu="2", memory="2Gi")) == (
        "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.")


def test_message_with_post_filter_and_prefilter():
    statuses = {"a": unschedulable("Insufficient cpu"), "b": unschedulable("Insufficient cpu")}
    assert fit_error_message(2, statuses, post_filter_message="preemption: x.") == (
        "0/2 nodes are available: 2 Insufficient cpu. preemption: x.")
    pre = Status(2, ("node(s) didn't match pod topology spread constraints",))
    assert fit_error_message(3, {}, pre) == (
        "0/3 nodes are available: node(s) didn't match pod topology spread constraints.")
    assert fit_error_message(0, {}) == "0/0 nodes are available:"


def test_no_nodes():
    assert fit_message([], pod()) == "no nodes available to schedule pods"


def test_cordoned_and_selector_reasons():
    nodes = [node("n1", unschedulable=True), node("n2", labels={"disk": "hdd"})]
    assert fit_message(nodes, pod(node_selector={"disk": "ssd"})) == (
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable.")


def test_least_allocated_picks_the_emptier_node():
    nodes = [node("n1"), node("n2")]
    assert schedule(nodes, pod(cpu="1", memory="1Gi"), {"n1": [pod(cpu="3", memory="6Gi")]}) == "n2"


def test_most_allocated_packs():
    nodes = [node("n1"), node("n2")]
    config = {"NodeResourcesFit": {"scoringStrategy": {"type": "MostAllocated"}}}
    assert schedule(nodes, pod(cpu="1", memory="1Gi"), {"n1": [pod(cpu="2", memory="2Gi")]},
                    plugin_config=config) == "n1"


def test_taints_steer_pods_to_tolerating_nodes():
    nodes = [node("n1", taints=[DB]), node("n2", taints=[taint("gpu", "yes")])]
    tolerant = pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}])
    assert schedule(nodes, tolerant) == "n1"


def test_preferred_node_affinity_wins_over_balance():
    nodes = [node("n1", labels={"disk": "ssd"}), node("n2")]
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}
    assert schedule(nodes, pod(cpu="1", affinity=affinity), {"n1": [pod(cpu="2")]}) == "n1"


def test_assumed_pods_make_the_next_pod_go_elsewhere():
    handle = cluster([node("n1", cpu="1"), node("n2", cpu="1")])
    fw = framework(handle)
    first = PodInfo(pod(cpu="800m"))
    chosen = fw.schedule(first).node_name
    handle.snapshot.assume_pod(first, chosen)
    second = fw.schedule(PodInfo(pod(cpu="800m"))).node_name
    assert {chosen, second} == {"n1", "n2"}
    handle.snapshot.forget_pod(first)
    assert handle.snapshot.nodes[chosen].requested.milli_cpu == 0


def test_nominated_node_is_tried_first():
    nodes = [node("n1"), node("n2")]
    assert schedule(nodes, pod(nominated="n1"), {"n1": [pod(cpu="3")]}) == "n1"


@pytest.mark.parametrize("nodes, percentage, expected", [
    (50, 0, 50),
    (99, 0, 99),
    (100, 0, 100),
    (1000, 0, 420),   # 50% - 1000/125 = 42%
    (5000, 0, 500),   # 10%
    (6000, 0, 300),   # floor of 5%
    (1000, 10, 100),
    (1000, 100, 1000),
    (200, 20, 100),   # never fewer than 100
])
def test_adaptive_percentage_of_nodes_to_score(nodes, percentage, expected):
    assert num_feasible_nodes_to_find(nodes, percentage) == expected


def test_sampling_stops_early_and_rotates_start():
    nodes = [node(f"n{i:03d}", cpu="1") for i in range(300)]
    handle = cluster(nodes)
    fw = framework(handle, percentage=10)
    state_pod = PodInfo(pod())
    feasible, statuses = fw.find_feasible({"__skip_filter__": set()}, state_pod, handle.snapshot.node_list())
    assert len(feasible) == 100 and not statuses
    assert fw.next_start_node_index == 100
    feasible2, _ = fw.find_feasible({"__skip_filter__": set()}, state_pod, handle.snapshot.node_list())
    assert feasible2[0].name != feasible[0].name


def test_default_plugins_and_weights():
    points, weights = resolve_plugins(SchedulerConfig().profiles[0])
    assert points["filter"] == ["NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts",
                                "NodeResourcesFit", "PodTopologySpread", "InterPodAffinity"]
    assert points["postFilter"] == ["DefaultPreemption"]
    assert points["bind"] == ["DefaultBinder"]
    assert weights["TaintToleration"] == 3 and weights["InterPodAffinity"] == 2


def test_profiles_from_yaml():
    config = SchedulerConfig.from_yaml("""
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
leaderElection: {leaderElect: false}
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
    filter:
      disabled: [{name: NodePorts}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
""")
    assert [p.scheduler_name for p in config.profiles] == ["default-scheduler", "packer"]
    assert config.percentage_of_nodes_to_score == 30 and config.leader_elect is False
    points, weights = resolve_plugins(config.profiles[1])
    assert points["score"] == ["NodeResourcesFit"] and weights["NodeResourcesFit"] == 5
    assert "NodePorts" not in points["filter"]
    assert config.profiles[1].plugin_config["NodeResourcesFit"]["scoringStrategy"]["type"] == "MostAllocated"


def test_bad_configuration():
    with pytest.raises(ValueError):
        SchedulerConfig.from_dict({"profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]})
    with pytest.raises(ValueError):
        resolve_plugins(SchedulerConfig.from_dict(
            {"profiles": [{"plugins": {"filter": {"enabled": [{"name": "Nope"}]}}}]}).profiles[0])


def test_anti_affinity_spreads_three_replicas_and_leaves_the_fourth():
    handle = cluster([node("n1"), node("n2"), node("n3")])
    fw = framework(handle)
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    chosen = []
    for _ in range(3):
        pi = PodInfo(pod(labels={"app": "web"}, affinity=anti))
        name = fw.schedule(pi).node_name
        handle.snapshot.assume_pod(pi, name)
        chosen.append(name)
    assert sorted(chosen) == ["n1", "n2", "n3"]
    with pytest.raises(FitError) as info:
        fw.schedule(PodInfo(pod(labels={"app": "web"}, affinity=anti)))
    assert info.value.message() == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."


def _random_cluster(rng):
    from .builders import taint as make_taint

    nodes = []
    for i in range(rng.randrange(1, 260)):
        taints = [make_taint("dedicated", "db")] if rng.random() < 0.1 else []
        nodes.append(node(f"n{i:03d}", cpu=rng.choice(["1", "2", "4"]), zone=rng.choice("abc"), taints=taints))
    placed = {}
    for n in nodes:
        if rng.random() < 0.5:
            placed[n["metadata"]["name"]] = [pod(cpu="500m", labels={"app": rng.choice(["web", "db"])})
                                             for _ in range(rng.randrange(1, 4))]
    return nodes, placed


def _random_pod(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return pod(cpu=rng.choice(["100m", "1", "3"]))
    if kind == 1:
        return pod(labels={"app": "web"}, affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}})
    if kind == 2:
        return pod(labels={"app": "web"}, spread=[{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                   "whenUnsatisfiable": "DoNotSchedule",
                                                   "labelSelector": {"matchLabels": {"app": "web"}}}])
    return pod(cpu="1", tolerations=[{"key": "dedicated", "operator": "Exists"}])


@pytest.mark.parametrize("seed", range(25))
def test_chunked_filtering_equals_node_by_node(seed):
    import random

    from pinnace.scheduler.framework import CycleState

    rng = random.Random(seed)
    nodes, placed = _random_cluster(rng)
    handle = cluster(nodes, placed)
    chunked = framework(handle, percentage=rng.choice([0, 10, 50]))
    single = framework(handle, percentage=chunked.percentage)
    start = rng.randrange(len(nodes))
    chunked.next_start_node_index = single.next_start_node_index = start
    p = PodInfo(_random_pod(rng))
    state = CycleState()
    chunked.run_pre_filter(state, p)
    all_nodes = handle.snapshot.node_list()
    a_feasible, a_statuses = chunked.find_feasible(state, p, all_nodes)
    order = all_nodes[start:] + all_nodes[:start]
    from pinnace.scheduler.profile import num_feasible_nodes_to_find

    b_feasible, b_statuses = single._find_feasible_one_by_one(
        state, p, order, start, num_feasible_nodes_to_find(len(all_nodes), single.percentage))
    assert [n.name for n in a_feasible] == [n.name for n in b_feasible]
    assert {k: (v.plugin, v.reasons) for k, v in a_statuses.items()} == {
        k: (v.plugin, v.reasons) for k, v in b_statuses.items()}
    assert chunked.next_start_node_index == single.next_start_node_index
