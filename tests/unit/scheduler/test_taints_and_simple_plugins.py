"""TaintToleration, NodeUnschedulable, NodeName, NodePorts and ImageLocality."""

import pytest

from pinnace.scheduler.framework import PodInfo
from pinnace.scheduler.plugins.image_locality import ImageLocality
from pinnace.scheduler.plugins.node_name import NodeName
from pinnace.scheduler.plugins.node_ports import NodePorts
from pinnace.scheduler.plugins.node_unschedulable import NodeUnschedulable
from pinnace.scheduler.plugins.taint_toleration import TaintToleration, toleration_matches

from .builders import cluster, node, node_info, pod, run_filter, run_score, taint

DB = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}


@pytest.mark.parametrize("toleration, taint_, tolerated", [
    ({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}, DB, True),
    ({"key": "dedicated", "value": "db"}, DB, True),  # Equal is the default; empty effect matches all
    ({"key": "dedicated", "value": "web", "effect": "NoSchedule"}, DB, False),
    ({"key": "dedicated", "operator": "Exists"}, DB, True),
    ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, DB, False),
    ({"operator": "Exists"}, DB, True),  # empty key with Exists tolerates everything
    ({"value": "db"}, DB, False),  # empty key needs Exists
    ({"key": "other", "operator": "Exists"}, DB, False),
    ({"key": "k", "operator": "Equal"}, {"key": "k", "effect": "NoSchedule"}, True),  # empty values equal
])
def test_toleration_matching(toleration, taint_, tolerated):
    assert toleration_matches(toleration, taint_) is tolerated


@pytest.mark.parametrize("taints, tolerations, reason", [
    ([], [], None),
    ([DB], [], "node(s) had untolerated taint {dedicated: db}"),
    ([DB], [{"key": "dedicated", "operator": "Exists"}], None),
    ([taint("gpu", effect="NoExecute")], [], "node(s) had untolerated taint {gpu: }"),
    ([taint("soft", "x", "PreferNoSchedule")], [], None),  # only scoring looks at PreferNoSchedule
    ([DB, taint("gpu", "yes")], [{"key": "dedicated", "operator": "Exists"}], "node(s) had untolerated taint {gpu: yes}"),
])
def test_taint_filter(taints, tolerations, reason):
    status = TaintToleration().filter({}, PodInfo(pod(tolerations=tolerations)), node_info(node(taints=taints)))
    assert (status.reasons[0] if status else None) == reason
    if status:
        assert status.code == 3  # unresolvable: evicting pods does not remove taints


def test_taint_score_prefers_fewer_untolerated_prefer_no_schedule():
    soft = [taint("a", "1", "PreferNoSchedule"), taint("b", "1", "PreferNoSchedule")]
    handle = cluster([node("n0"), node("n1", taints=soft[:1]), node("n2", taints=soft)])
    assert run_score(TaintToleration(), pod(), handle) == {"n0": 100, "n1": 50, "n2": 0}
    tolerant = pod(tolerations=[{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert run_score(TaintToleration(), tolerant, handle) == {"n0": 100, "n1": 100, "n2": 0}


def test_taint_prefilter_skips_untainted_clusters():
    handle = cluster([node("n0")])
    assert TaintToleration(handle=handle).pre_filter({}, PodInfo(pod())).code == 5


@pytest.mark.parametrize("unschedulable, tolerations, fits", [
    (False, [], True),
    (True, [], False),
    (True, [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}], True),
    (True, [{"operator": "Exists"}], True),
])
def test_cordoned_nodes(unschedulable, tolerations, fits):
    status = NodeUnschedulable().filter({}, PodInfo(pod(tolerations=tolerations)),
                                        node_info(node(unschedulable=unschedulable)))
    assert (status is None) is fits
    if status:
        assert status.reasons == ("node(s) were unschedulable",)


def test_node_name():
    result = run_filter(NodeName(), pod(node_name="b"), cluster([node("a"), node("b")]))
    assert result == {"a": "<prefilter>", "b": None}
    status = NodeName().filter({}, PodInfo(pod(node_name="b")), node_info(node("a")))
    assert status.reasons == ("node(s) didn't match the requested node name",)


def port(host_port, protocol="TCP", host_ip=None):
    p = {"containerPort": 80, "hostPort": host_port, "protocol": protocol}
    if host_ip:
        p["hostIP"] = host_ip
    return p


@pytest.mark.parametrize("wanted, used, fits", [
    ([port(80)], [], True),
    ([port(80)], [port(80)], False),
    ([port(80)], [port(81)], True),
    ([port(80, "UDP")], [port(80)], True),
    ([port(80, host_ip="10.0.0.1")], [port(80, host_ip="10.0.0.2")], True),
    ([port(80, host_ip="10.0.0.1")], [port(80)], False),  # 0.0.0.0 conflicts with every address
    ([port(80)], [port(80, host_ip="10.0.0.1")], False),
    ([port(80, host_ip="10.0.0.1")], [port(80, host_ip="10.0.0.1")], False),
])
def test_host_ports(wanted, used, fits):
    info = node_info(node(), pod(ports=used)) if used else node_info(node())
    status = NodePorts().filter({}, PodInfo(pod(ports=wanted)), info)
    assert (status is None) is fits
    if status:
        assert status.reasons == ("node(s) didn't have free ports for the requested pod ports",)


def test_pods_without_host_ports_skip_the_check():
    assert NodePorts().pre_filter({}, PodInfo(pod())).code == 5


def test_image_locality_prefers_nodes_with_big_images():
    mb = 1024 * 1024
    nodes = [node("a", images=[(["registry/app:1"], 500 * mb)]), node("b", images=[(["other:1"], 500 * mb)]),
             node("c", images=[(["registry/app:1"], 500 * mb), (["docker.io/busybox:latest", "busybox:latest"], 2 * mb)])]
    handle = cluster(nodes)
    scores = run_score(ImageLocality(handle=handle), pod(image="registry/app:1"), handle)
    assert scores["b"] == 0
    assert scores["a"] == scores["c"] > 0
    # "busybox" means "busybox:latest"; a tiny image stays under the 23 MB threshold.
    assert run_score(ImageLocality(handle=handle), pod(image="busybox"), handle) == {"a": 0, "b": 0, "c": 0}
