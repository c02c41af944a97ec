"""NodeResourcesFit and NodeResourcesBalancedAllocation, as Kubernetes counts and scores requests."""

import pytest

from pinnace.scheduler.framework import PodInfo, pod_non_zero_requests, pod_requests
from pinnace.scheduler.plugins.balanced_allocation import BalancedAllocation
from pinnace.scheduler.plugins.node_resources_fit import NodeResourcesFit

from .builders import cluster, container, node, node_info, pod, run_score


@pytest.mark.parametrize("spec, cpu, memory", [
    ({"containers": [container("500m", "1Gi")]}, 500, 2**30),
    ({"containers": [container("500m"), container("250m")]}, 750, 0),
    # Init containers run one at a time: the pod needs the larger of the two phases.
    ({"containers": [container("500m")], "initContainers": [container("2"), container("1")]}, 2000, 0),
    ({"containers": [container("3")], "initContainers": [container("2")]}, 3000, 0),
    # A sidecar (restartable init container) runs next to the regular containers and later init containers.
    ({"containers": [container("1")], "initContainers": [container("500m", restart_policy="Always")]}, 1500, 0),
    ({"containers": [container("100m")],
      "initContainers": [container("500m", restart_policy="Always"), container("2")]}, 2500, 0),
    ({"containers": [container("1", "1Gi")], "overhead": {"cpu": "250m", "memory": "128Mi"}},
     1250, 2**30 + 128 * 2**20),
    ({"containers": [container("0.1")]}, 100, 0),
    ({"containers": [container("1m")]}, 1, 0),
])
def test_pod_requests_count_like_kubernetes(spec, cpu, memory):
    r = pod_requests(spec)
    assert (r.milli_cpu, r.memory) == (cpu, memory)


def test_non_zero_requests_default_for_unset_containers():
    assert pod_non_zero_requests({"containers": [container()]}) == (100, 200 * 2**20)
    assert pod_non_zero_requests({"containers": [container("1")]}) == (1000, 200 * 2**20)
    assert pod_non_zero_requests({"containers": [container(memory="1Gi"), container()]}) == (200, 2**30 + 200 * 2**20)


@pytest.mark.parametrize("p, n, placed, reasons", [
    (pod(cpu="500m"), node(cpu="1"), [], []),
    (pod(cpu="1500m"), node(cpu="1"), [], ["Insufficient cpu"]),
    (pod(cpu="500m"), node(cpu="1"), [pod(cpu="600m")], ["Insufficient cpu"]),
    (pod(cpu="500m"), node(cpu="1"), [pod(cpu="500m")], []),
    (pod(memory="2Gi"), node(memory="1Gi"), [], ["Insufficient memory"]),
    (pod(cpu="2", memory="2Gi"), node(cpu="1", memory="1Gi"), [], ["Insufficient cpu", "Insufficient memory"]),
    (pod(cpu="500m", init_containers=[container("2")]), node(cpu="1"), [], ["Insufficient cpu"]),
    (pod(cpu="800m", overhead={"cpu": "300m"}), node(cpu="1"), [], ["Insufficient cpu"]),
    (pod(), node(pods=1), [pod()], ["Too many pods"]),
    (pod(cpu="2"), node(cpu="1", pods=1), [pod()], ["Too many pods", "Insufficient cpu"]),
    (pod(extended={"example.com/gpu": "1"}), node(), [], ["Insufficient example.com/gpu"]),
    (pod(extended={"example.com/gpu": "2"}), node(extended={"example.com/gpu": "2"}), [], []),
    (pod(extended={"example.com/gpu": "1"}), node(extended={"example.com/gpu": "2"}),
     [pod(extended={"example.com/gpu": "2"})], ["Insufficient example.com/gpu"]),
    (pod(containers=[container(ephemeral="2Gi")]), node(ephemeral="1Gi"), [], ["Insufficient ephemeral-storage"]),
    # A pod asking nothing still fits an over-committed node.
    (pod(), node(cpu="1"), [pod(cpu="2")], []),
])
def test_requests_fit_allocatable(p, n, placed, reasons):
    info = node_info(n, *placed)
    status = NodeResourcesFit().filter({}, PodInfo(p), info)
    assert (list(status.reasons) if status else []) == reasons
    if status:
        assert status.code == 2  # Unschedulable: preemption may help


def test_assumed_pods_count_toward_requested():
    handle = cluster([node("n1", cpu="1")])
    handle.snapshot.assume_pod(PodInfo(pod(cpu="800m")), "n1")
    status = NodeResourcesFit().filter({}, PodInfo(pod(cpu="500m")), handle.snapshot.nodes["n1"])
    assert status is not None and status.reasons == ("Insufficient cpu",)


def test_ignored_resources_are_not_checked():
    plugin = NodeResourcesFit({"ignoredResources": ["example.com/gpu"], "ignoredResourceGroups": ["vendor.io"]})
    p = PodInfo(pod(extended={"example.com/gpu": "1", "vendor.io/fpga": "1"}))
    assert plugin.filter({}, p, node_info(node())) is None


@pytest.mark.parametrize("strategy, expected", [
    # n1 is empty, n2 half used. cpu 4000m, memory 8Gi on both; pod requests 1 cpu / 2Gi.
    ("LeastAllocated", {"n1": 75, "n2": 25}),
    ("MostAllocated", {"n1": 25, "n2": 75}),
])
def test_scoring_strategies(strategy, expected):
    handle = cluster([node("n1"), node("n2")], {"n2": [pod(cpu="2", memory="4Gi")]})
    plugin = NodeResourcesFit({"scoringStrategy": {"type": strategy}})
    assert run_score(plugin, pod(cpu="1", memory="2Gi"), handle) == expected


def test_least_allocated_uses_non_zero_requests_and_weights():
    handle = cluster([node("n1", cpu="1", memory="1Gi")])
    # 100m of 1000m and 200Mi of 1Gi are taken by default requests.
    assert run_score(NodeResourcesFit(), pod(), handle) == {"n1": (90 + 80) // 2}
    weighted = NodeResourcesFit({"scoringStrategy": {"type": "LeastAllocated",
                                                     "resources": [{"name": "cpu", "weight": 3},
                                                                   {"name": "memory", "weight": 1}]}})
    assert run_score(weighted, pod(), handle) == {"n1": (90 * 3 + 80) // 4}


def test_requested_to_capacity_ratio_shape():
    handle = cluster([node("n1", cpu="4", memory="8Gi")])
    plugin = NodeResourcesFit({"scoringStrategy": {
        "type": "RequestedToCapacityRatio", "resources": [{"name": "cpu", "weight": 1}],
        "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}}})
    assert run_score(plugin, pod(cpu="2"), handle) == {"n1": 50}


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError):
        NodeResourcesFit({"scoringStrategy": {"type": "Sideways"}})


@pytest.mark.parametrize("placed, expected", [
    ([], 100 - int(abs(0.25 - 0.25) / 2 * 100)),
    ([pod(cpu="2")], int((1 - abs(0.75 - 0.25) / 2) * 100)),
])
def test_balanced_allocation(placed, expected):
    handle = cluster([node("n1", cpu="4", memory="8Gi")], {"n1": placed})
    assert run_score(BalancedAllocation(), pod(cpu="1", memory="2Gi"), handle) == {"n1": expected}


def test_balanced_allocation_skips_pods_without_requests():
    handle = cluster([node("n1")])
    assert BalancedAllocation().pre_score({}, PodInfo(pod()), handle.snapshot.node_list()).code == 5


def test_balanced_allocation_prefers_evening_out():
    handle = cluster([node("n1", cpu="4", memory="8Gi"), node("n2", cpu="4", memory="8Gi")],
                     {"n1": [pod(cpu="2")], "n2": [pod(memory="4Gi")]})
    scores = run_score(BalancedAllocation(), pod(cpu="2"), handle)
    assert scores["n2"] > scores["n1"]


@pytest.mark.parametrize("plugin_class", [NodeResourcesFit, BalancedAllocation])
def test_remembered_scores_follow_every_node_change(plugin_class):
    # One plugin instance scores cycle after cycle; each answer must equal a fresh instance's.
    handle = cluster([node("n1", cpu="4", memory="8Gi"), node("n2", cpu="4", memory="8Gi"),
                      node("n3", cpu="4", memory="8Gi")])
    cache = handle.snapshot
    plugin = plugin_class()
    newcomer = pod(cpu="1", memory="2Gi")

    def check():
        assert run_score(plugin, newcomer, handle) == run_score(plugin_class(), newcomer, handle)

    check()
    placed = PodInfo({**pod(cpu="2", memory="1Gi"), "metadata": {"name": "a", "namespace": "default", "uid": "a"}})
    cache.assume_pod(placed, "n1")
    check()
    assert run_score(plugin, pod(cpu="500m", memory="1Gi"), handle) == run_score(
        plugin_class(), pod(cpu="500m", memory="1Gi"), handle)  # another pod size
    check()
    cache.forget_pod(placed)
    check()
    cache.update_node(node("n2", cpu="8", memory="8Gi"))  # allocatable grew
    check()
    cache.remove_node("n3")
    cache.add_node(node("n3", cpu="2", memory="8Gi"))  # same name, another machine, same generation
    check()
