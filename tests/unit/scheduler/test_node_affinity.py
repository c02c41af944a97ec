"""NodeAffinity and nodeSelector: operators, ORed terms, matchFields, preferred scores."""

import pytest

from pinnace.scheduler.plugins.node_affinity import REASON, NodeAffinity

from .builders import cluster, node, pod, run_filter, run_score


def required(*terms):
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key, op, *values):
    e = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


NODES = [
    node("a", labels={"disk": "ssd", "gen": "5", "zone": "z1"}),
    node("b", labels={"disk": "hdd", "gen": "3", "zone": "z2"}),
    node("c", labels={"gen": "x"}),
]


@pytest.mark.parametrize("affinity, node_selector, fits", [
    (None, None, {"a", "b", "c"}),
    (None, {"disk": "ssd"}, {"a"}),
    (None, {"disk": "ssd", "zone": "z2"}, set()),
    (required({"matchExpressions": [expr("disk", "In", "ssd", "nvme")]}), None, {"a"}),
    (required({"matchExpressions": [expr("disk", "NotIn", "ssd")]}), None, {"b", "c"}),  # missing label matches NotIn
    (required({"matchExpressions": [expr("disk", "Exists")]}), None, {"a", "b"}),
    (required({"matchExpressions": [expr("disk", "DoesNotExist")]}), None, {"c"}),
    (required({"matchExpressions": [expr("gen", "Gt", "4")]}), None, {"a"}),
    (required({"matchExpressions": [expr("gen", "Lt", "4")]}), None, {"b"}),  # "x" is not an integer
    (required({"matchExpressions": [expr("gen", "Gt", "4"), expr("disk", "In", "hdd")]}), None, set()),  # ANDed
    (required({"matchExpressions": [expr("disk", "In", "ssd")]},
              {"matchExpressions": [expr("disk", "In", "hdd")]}), None, {"a", "b"}),  # terms ORed
    (required({"matchFields": [expr("metadata.name", "In", "b")]}), None, {"b"}),
    (required({"matchFields": [expr("metadata.name", "NotIn", "b")]}), None, {"a", "c"}),
    (required({}), None, set()),  # an empty term matches nothing
    # nodeSelector and affinity must both hold.
    (required({"matchExpressions": [expr("disk", "Exists")]}), {"zone": "z2"}, {"b"}),
])
def test_required_node_affinity_and_selector(affinity, node_selector, fits):
    result = run_filter(NodeAffinity(), pod(affinity=affinity, node_selector=node_selector), cluster(NODES))
    assert {n for n, reason in result.items() if reason is None} == fits
    assert all(reason in (None, REASON, "<prefilter>") for reason in result.values())


def test_no_terms_is_rejected_in_prefilter():
    result = run_filter(NodeAffinity(), pod(affinity=required()), cluster(NODES))
    assert set(result.values()) == {REASON}


def test_match_fields_name_narrows_candidates_in_prefilter():
    from pinnace.scheduler.framework import PodInfo

    p = PodInfo(pod(affinity=required({"matchFields": [expr("metadata.name", "In", "a", "c")]})))
    assert NodeAffinity().pre_filter({}, p) == {"a", "c"}


def test_preferred_terms_score_by_weight():
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [expr("disk", "In", "ssd")]}},
        {"weight": 30, "preference": {"matchExpressions": [expr("zone", "In", "z2")]}},
        {"weight": 5, "preference": {"matchExpressions": [expr("gen", "Exists")]}},
    ]}}
    scores = run_score(NodeAffinity(), pod(affinity=affinity), cluster(NODES))
    # raw: a=15, b=35, c=5; scaled by the maximum
    assert scores == {"a": 15 * 100 // 35, "b": 100, "c": 5 * 100 // 35}


def test_no_preferred_terms_skip_scoring():
    from pinnace.scheduler.framework import PodInfo

    assert NodeAffinity().pre_score({}, PodInfo(pod()), []).code == 5
