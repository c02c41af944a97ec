"""Deployment rollout arithmetic: fenceposts, new and old ReplicaSet sizes, proportional scaling."""

import datetime as dt

import pytest

from pinnace.controllers import rollout
from pinnace.controllers.objects import POD_TEMPLATE_HASH


def deployment(replicas=10, surge=None, unavailable=None, strategy="RollingUpdate", generation=1, **spec):
    rolling = {}
    if surge is not None:
        rolling["maxSurge"] = surge
    if unavailable is not None:
        rolling["maxUnavailable"] = unavailable
    strategy_spec = {"type": strategy}
    if strategy == "RollingUpdate":
        strategy_spec["rollingUpdate"] = rolling
    return {
        "metadata": {"name": "web", "generation": generation, "annotations": {}},
        "spec": {"replicas": replicas, "strategy": strategy_spec,
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}},
                 **spec},
        "status": {},
    }


def rs(name, replicas, available=None, created="2026-01-01T00:00:00Z", annotations=None):
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "template": {}},
            "status": {"replicas": replicas, "availableReplicas": replicas if available is None else available}}


@pytest.mark.parametrize("replicas, surge, unavailable, expected", [
    (10, None, None, (3, 2)),          # defaults 25%: surge rounds up, unavailable rounds down
    (10, 0, 0, (0, 1)),                # both zero would never progress
    (10, "10%", "0%", (1, 0)),
    (4, 1, 0, (1, 0)),
    (3, "50%", "50%", (2, 1)),
])
def test_fenceposts(replicas, surge, unavailable, expected):
    assert rollout.resolve_fenceposts(deployment(replicas, surge, unavailable)) == expected


def test_recreate_has_no_fenceposts():
    assert rollout.resolve_fenceposts(deployment(strategy="Recreate")) == (0, 0)


def test_new_replica_set_grows_within_surge():
    d = deployment(10, surge=2, unavailable=0)
    old, new = rs("old", 10), rs("new", 0)
    assert rollout.new_rs_replicas_rolling(d, [old, new], new) == 2
    assert rollout.new_rs_replicas_rolling(d, [rs("old", 10), rs("new", 2)], rs("new", 2)) == 2


def test_old_replica_sets_shrink_only_while_enough_are_available():
    d = deployment(10, surge=2, unavailable=0)
    new = rs("new", 2, available=0)
    assert rollout.plan_old_scale_down(d, [rs("old", 10)], new) == {}
    new = rs("new", 2, available=2)
    assert rollout.plan_old_scale_down(d, [rs("old", 10)], new) == {"old": 8}


def test_unhealthy_old_pods_go_first():
    d = deployment(10, surge=0, unavailable=1)
    sizes = rollout.plan_old_scale_down(d, [rs("old", 10, available=7)], rs("new", 0))
    # 3 unhealthy may go (they cost no availability) but the budget allows 1 at a time from 10 pods
    assert sizes == {"old": 9}


def test_proportional_scaling_keeps_ratio():
    d = deployment(20, surge=3, unavailable=2)
    new = rs("new", 5, created="2026-01-02T00:00:00Z", annotations={rollout.MAX_REPLICAS: "13"})
    old = rs("old", 8, annotations={rollout.MAX_REPLICAS: "13"})
    sizes = rollout.proportional_sizes(d, new, [old])
    assert sum(sizes.values()) == 23
    assert sizes["old"] > sizes["new"]


def test_scale_to_zero_shrinks_everything():
    d = deployment(0)
    sizes = rollout.proportional_sizes(d, rs("new", 3, created="2026-01-02T00:00:00Z"), [rs("old", 2)])
    assert sizes == {"new": 0, "old": 0}


def test_template_hash_ignores_hash_label_and_empty_fields():
    a = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "resources": {}}]}}
    b = {"metadata": {"creationTimestamp": None, "labels": {"app": "web", POD_TEMPLATE_HASH: "x"}},
         "spec": {"containers": [{"name": "c"}]}}
    assert rollout.pod_template_hash(a) == rollout.pod_template_hash(b)
    assert rollout.pod_template_hash(a) != rollout.pod_template_hash(a, collision_count=1)
    c = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "d"}]}}
    assert rollout.pod_template_hash(a) != rollout.pod_template_hash(c)


def test_reused_replica_set_moves_to_new_revision_and_keeps_history():
    old = rs("old", 0, annotations={rollout.REVISION: "1"})
    assert rollout.revision_annotations(old, 3) == {rollout.REVISION: "3", rollout.REVISION_HISTORY: "1"}


def test_complete_and_timed_out():
    d = deployment(2, progressDeadlineSeconds=10)
    status = {"updatedReplicas": 2, "replicas": 2, "availableReplicas": 2, "observedGeneration": 1}
    assert rollout.is_complete(d, status)
    now = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    stuck = {"conditions": [{"type": "Progressing", "status": "True", "reason": rollout.RS_UPDATED,
                             "lastUpdateTime": "2026-01-01T00:00:00Z"}]}
    assert rollout.has_timed_out(d, stuck, now)
    assert not rollout.has_timed_out(d, stuck, dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC))


def test_available_condition_follows_max_unavailable():
    d = deployment(4, surge=1, unavailable=1)
    status = rollout.calculate_status(d, rs("new", 4, available=3), [rs("new", 4, available=3)])
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"
    status = rollout.calculate_status(d, rs("new", 4, available=2), [rs("new", 4, available=2)])
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "False"
