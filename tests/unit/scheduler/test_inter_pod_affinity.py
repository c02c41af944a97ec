"""InterPodAffinity: required (anti-)affinity, namespaces, the symmetric rule, preferred scoring."""

from pinnace.scheduler.framework import CycleState, PodInfo
from pinnace.scheduler.plugins.inter_pod_affinity import (
    AFFINITY_REASON,
    ANTI_AFFINITY_REASON,
    EXISTING_ANTI_AFFINITY_REASON,
    InterPodAffinity,
)

from .builders import cluster, node, pod, run_filter, run_score

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
NODES = [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b"), node("nozone")]


def term(labels, topology=HOST, namespaces=None, namespace_selector=None, selector=None):
    t = {"labelSelector": selector if selector is not None else {"matchLabels": labels}, "topologyKey": topology}
    if namespaces is not None:
        t["namespaces"] = namespaces
    if namespace_selector is not None:
        t["namespaceSelector"] = namespace_selector
    return t


def affinity(*terms):
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def anti(*terms):
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def fits(p, placed, nodes=NODES, **kw):
    handle = cluster(nodes, placed, **kw)
    result = run_filter(InterPodAffinity(handle=handle), p, handle)
    return {n for n, r in result.items() if r is None}, result


def test_no_affinity_anywhere_skips():
    handle = cluster(NODES, {"a1": [pod(labels={"app": "db"})]})
    assert InterPodAffinity(handle=handle).pre_filter(CycleState(), PodInfo(pod())).code == 5


def test_required_affinity_same_zone():
    ok, result = fits(pod(affinity=affinity(term({"app": "db"}, ZONE))), {"a2": [pod(labels={"app": "db"})]})
    assert ok == {"a1", "a2"}
    assert result["b1"] == AFFINITY_REASON and result["nozone"] == AFFINITY_REASON


def test_required_affinity_on_hostname():
    ok, _ = fits(pod(affinity=affinity(term({"app": "db"}))), {"b1": [pod(labels={"app": "db"})]})
    assert ok == {"b1"}


def test_affinity_to_self_lets_the_first_pod_in():
    # No pod matches yet and the pod matches its own term: any node with the topology key will do.
    ok, _ = fits(pod(labels={"app": "web"}, affinity=affinity(term({"app": "web"}, ZONE))), {})
    assert ok == {"a1", "a2", "b1"}
    # Without self-match it stays pending.
    ok, _ = fits(pod(labels={"app": "x"}, affinity=affinity(term({"app": "web"}, ZONE))), {})
    assert ok == set()


def test_multiple_affinity_terms_need_one_pod_matching_all():
    p = pod(affinity=affinity(term({"app": "db"}, ZONE), term({"tier": "be"}, ZONE)))
    ok, _ = fits(p, {"a1": [pod(labels={"app": "db"})], "b1": [pod(labels={"app": "db", "tier": "be"})]})
    assert ok == {"b1"}


def test_required_anti_affinity_spreads_replicas():
    p = pod(labels={"app": "web"}, affinity=anti(term({"app": "web"})))
    ok, result = fits(p, {"a1": [pod(labels={"app": "web"})], "b1": [pod(labels={"app": "other"})]})
    assert ok == {"a2", "b1", "nozone"}
    assert result["a1"] == ANTI_AFFINITY_REASON


def test_anti_affinity_on_zone_and_missing_key_is_fine():
    p = pod(affinity=anti(term({"app": "web"}, ZONE)))
    ok, _ = fits(p, {"a1": [pod(labels={"app": "web"})]})
    assert ok == {"b1", "nozone"}


def test_symmetric_rule_existing_pod_anti_affinity_rejects_newcomer():
    existing = pod(labels={"app": "db"}, affinity=anti(term({"app": "web"}, ZONE)))
    ok, result = fits(pod(labels={"app": "web"}), {"a1": [existing]})
    assert ok == {"b1", "nozone"}
    assert result["a2"] == EXISTING_ANTI_AFFINITY_REASON


def test_symmetric_rule_ignores_pods_it_does_not_select():
    existing = pod(labels={"app": "db"}, affinity=anti(term({"app": "web"})))
    ok, _ = fits(pod(labels={"app": "api"}), {"a1": [existing]})
    assert ok == {"a1", "a2", "b1", "nozone"}


def test_term_namespaces_default_to_the_pods_own():
    placed = {"a1": [pod(namespace="other", labels={"app": "web"})]}
    ok, _ = fits(pod(affinity=anti(term({"app": "web"}))), placed)
    assert "a1" in ok  # the matching pod lives in another namespace
    ok, _ = fits(pod(affinity=anti(term({"app": "web"}, namespaces=["other"]))), placed)
    assert "a1" not in ok


def test_namespace_selector():
    placed = {"a1": [pod(namespace="team-a", labels={"app": "web"})], "b1": [pod(namespace="team-b", labels={"app": "web"})]}
    namespaces = {"team-a": {"team": "a"}, "team-b": {"team": "b"}}
    p = pod(affinity=anti(term({"app": "web"}, namespace_selector={"matchLabels": {"team": "a"}})))
    ok, _ = fits(p, placed, namespaces=namespaces)
    assert "a1" not in ok and "b1" in ok
    everywhere = pod(affinity=anti(term({"app": "web"}, namespace_selector={})))
    ok, _ = fits(everywhere, placed, namespaces=namespaces)
    assert "a1" not in ok and "b1" not in ok


def test_match_expressions_and_nil_selector():
    placed = {"a1": [pod(labels={"app": "web", "v": "1"})]}
    p = pod(affinity=anti(term(None, selector={"matchExpressions": [{"key": "v", "operator": "In", "values": ["1", "2"]}]})))
    ok, _ = fits(p, placed)
    assert "a1" not in ok
    nil = pod(affinity=anti({"topologyKey": HOST}))  # a nil selector selects nothing
    ok, _ = fits(nil, placed)
    assert "a1" in ok


def test_match_label_keys_narrow_to_the_same_revision():
    placed = {"a1": [pod(labels={"app": "web", "rev": "1"})], "a2": [pod(labels={"app": "web", "rev": "2"})]}
    t = term({"app": "web"})
    t["matchLabelKeys"] = ["rev"]
    ok, _ = fits(pod(labels={"app": "web", "rev": "2"}, affinity=anti(t)), placed)
    assert "a1" in ok and "a2" not in ok


def test_assumed_pods_count_for_anti_affinity():
    handle = cluster(NODES)
    handle.snapshot.assume_pod(PodInfo(pod(labels={"app": "web"})), "a1")
    result = run_filter(InterPodAffinity(handle=handle), pod(affinity=anti(term({"app": "web"}))), handle)
    assert result["a1"] == ANTI_AFFINITY_REASON


def test_add_and_remove_pod_extensions_update_counts():
    handle = cluster(NODES)
    plugin = InterPodAffinity(handle=handle)
    p = PodInfo(pod(affinity=anti(term({"app": "web"}))))
    state = CycleState()
    plugin.pre_filter(state, p)
    a1 = handle.snapshot.nodes["a1"]
    other = PodInfo(pod(labels={"app": "web"}))
    plugin.add_pod(state, p, other, a1)
    assert plugin.filter(state, p, a1).reasons == (ANTI_AFFINITY_REASON,)
    plugin.remove_pod(state, p, other, a1)
    assert plugin.filter(state, p, a1) is None


def preferred(kind, weight, t):
    return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": weight, "podAffinityTerm": t}]}}


def test_preferred_affinity_and_anti_affinity_scores():
    handle = cluster(NODES, {"a1": [pod(labels={"app": "db"})], "b1": [pod(labels={"app": "cache"})]})
    near_db = pod(affinity=preferred("podAffinity", 50, term({"app": "db"}, ZONE)))
    scores = run_score(InterPodAffinity(handle=handle), near_db, handle)
    assert scores["a1"] == scores["a2"] == 100 and scores["b1"] == scores["nozone"] == 0
    away = pod(affinity=preferred("podAntiAffinity", 50, term({"app": "cache"})))
    scores = run_score(InterPodAffinity(handle=handle), away, handle)
    assert scores["b1"] == 0 and scores["a1"] == scores["a2"] == scores["nozone"] == 100


def test_existing_pods_terms_score_symmetrically():
    likes_web = pod(labels={"app": "cache"}, affinity=preferred("podAffinity", 80, term({"app": "web"}, ZONE)))
    requires_web = pod(labels={"app": "x"}, affinity=affinity(term({"app": "web"})))
    handle = cluster(NODES, {"b1": [likes_web], "a1": [requires_web]})
    scores = run_score(InterPodAffinity(handle=handle), pod(labels={"app": "web"}), handle)
    # b1's zone gets 80, a1 gets the hard pod affinity weight 1: scaled min-max.
    assert scores["b1"] == 100 and scores["a1"] == 1 and scores["a2"] == 0 and scores["nozone"] == 0
