"""The HorizontalPodAutoscaler's arithmetic: replica proposals, tolerance, clamps, behavior, stabilization."""

from __future__ import annotations

import datetime as dt

import pytest

from pinnace.api.tables import _hpa_targets
from pinnace.client.clock import FakeClock
from pinnace.controllers.hpa import (
    Autoscaler,
    MetricError,
    PodMetric,
    condition_of,
    format_milli,
    raw_resource_replicas,
    resource_metrics,
    resource_replicas,
    scaling_rules,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
LONG_AGO = "2026-01-01T11:00:00Z"  # started and ready well before the cpu initialization period


def pod(name: str, cpu: str | None = "500m", *, phase: str = "Running", ready: str = "True",
        started: str | None = LONG_AGO, deleting: bool = False) -> dict:
    resources = {"requests": {"cpu": cpu}} if cpu else {}
    status: dict = {"phase": phase, "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": LONG_AGO}]}
    if started:
        status["startTime"] = started
    meta: dict = {"name": name, "namespace": "default"}
    if deleting:
        meta["deletionTimestamp"] = LONG_AGO
    return {"metadata": meta, "spec": {"containers": [{"name": "main", "resources": resources}]}, "status": status}


def usage(**millicores: int) -> dict[str, PodMetric]:
    return {name: PodMetric(value, NOW, 15.0) for name, value in millicores.items()}


@pytest.mark.parametrize("current, used, target, expected", [
    (2, {"a": 400, "b": 400}, 50, 4),          # 80% of 500m against 50%: ceil(2 * 1.6)
    (2, {"a": 270, "b": 270}, 50, 2),          # 54%: within the 0.1 tolerance, no change
    (2, {"a": 225, "b": 225}, 50, 2),          # 45%: within tolerance downwards
    (2, {"a": 100, "b": 100}, 50, 1),          # 20%: ceil(2 * 0.4)
    (3, {"a": 500, "b": 500, "c": 500}, 50, 6),
])
def test_utilization_proposal(current, used, target, expected):
    pods = [pod(name) for name in used]
    replicas, _, _ = resource_replicas(current, target, "cpu", pods, usage(**used), NOW)
    assert replicas == expected


def test_utilization_and_average_value_reported():
    replicas, utilization, raw = resource_replicas(2, 50, "cpu", [pod("a"), pod("b")], usage(a=400, b=400), NOW)
    assert (replicas, utilization, format_milli(raw)) == (4, 80, "400m")


def test_missing_request_is_an_error():
    with pytest.raises(MetricError, match="missing request for cpu in container main of Pod b"):
        resource_replicas(2, 50, "cpu", [pod("a"), pod("b", cpu=None)], usage(a=400, b=400), NOW)


def test_unready_pods_count_as_idle_on_scale_up():
    pods = [pod("a"), pod("b"), pod("c", ready="False", started="2026-01-01T11:59:00Z")]
    # a and b at 100% of 500m, target 50% -> ratio 2; c counts as 0: (500+500+0)/1500 = 66% -> 1.33 * 3 = 4
    replicas, utilization, _ = resource_replicas(3, 50, "cpu", pods, usage(a=500, b=500, c=500), NOW)
    assert (replicas, utilization) == (4, 100)


def test_pending_and_deleted_and_failed_pods():
    pods = [pod("a"), pod("p", phase="Pending"), pod("d", deleting=True), pod("f", phase="Failed")]
    replicas, _, _ = resource_replicas(2, 50, "cpu", pods, usage(a=100), NOW)
    assert replicas == 1  # only a counts: 20% -> ceil(1 * 0.4)


def test_missing_metrics_damp_a_scale_down():
    pods = [pod("a"), pod("b")]
    # a at 20%; b has no metric -> counted as using 100% of its request: (100+500)/1000 = 60% -> 1.2 * 2 = 3 > 2
    replicas, _, _ = resource_replicas(2, 50, "cpu", pods, usage(a=100), NOW)
    assert replicas == 2  # the fallback flips the direction: keep the current count


def test_missing_metrics_damp_a_scale_up():
    pods = [pod("a"), pod("b")]
    replicas, _, _ = resource_replicas(2, 50, "cpu", pods, usage(a=500), NOW)
    assert replicas == 2  # (500 + 0) / 1000 = 50%: within tolerance


def test_no_usable_metrics():
    with pytest.raises(MetricError, match="did not receive metrics for targeted pods"):
        resource_replicas(1, 50, "cpu", [pod("a", phase="Pending")], {}, NOW)
    with pytest.raises(MetricError, match="no pods returned by selector"):
        resource_replicas(1, 50, "cpu", [], {}, NOW)


@pytest.mark.parametrize("used, target, expected, average", [
    ({"a": 300, "b": 300}, 100, 6, "300m"),
    ({"a": 105, "b": 95}, 100, 2, "100m"),   # exactly on target
    ({"a": 20, "b": 20}, 100, 1, "20m"),
])
def test_average_value_proposal(used, target, expected, average):
    replicas, usage_milli = raw_resource_replicas(2, target, "cpu", [pod(n) for n in used], usage(**used), NOW)
    assert (replicas, format_milli(usage_milli)) == (expected, average)


def test_memory_metrics_from_pod_metrics():
    items = [{"metadata": {"name": "a"}, "timestamp": "2026-01-01T12:00:00Z", "window": "10.5s",
              "containers": [{"name": "main", "usage": {"cpu": "250000000n", "memory": "1024Ki"}},
                             {"name": "side", "usage": {"cpu": "1m", "memory": "1Mi"}}]}]
    metrics = resource_metrics(items, "memory")
    assert metrics["a"].value == (1024 * 1024 + 1024 * 1024) * 1000
    assert resource_metrics(items, "cpu", container="main")["a"].value == 250
    assert resource_metrics(items, "cpu")["a"].window == 10.5


@pytest.mark.parametrize("milli, text", [(250, "250m"), (1000, "1"), (1500, "1500m"), (200_000_000_000, "200M"),
                                         (104857600000, "104857600"), (0, "0")])
def test_format_milli(milli, text):
    assert format_milli(milli) == text


# --- normalization: clamps, stabilization, behavior -------------------------------------------------


def normalize(autoscaler, current, desired, *, at, minimum=1, maximum=10, behavior=None, status=None):
    status = {} if status is None else status
    return autoscaler.normalize("default/web", status, current, desired, minimum, maximum, behavior, at), status


@pytest.mark.parametrize("current, desired, minimum, maximum, expected, reason", [
    (3, 5, 1, 10, 5, "DesiredWithinRange"),
    (3, 12, 1, 10, 6, "ScaleUpLimit"),          # at most 2 * current without behavior
    (1, 9, 1, 10, 4, "ScaleUpLimit"),           # ... or 4
    (6, 12, 1, 10, 10, "TooManyReplicas"),
    (3, 0, 2, 10, 2, "TooFewReplicas"),
])
def test_clamps_without_behavior(current, desired, minimum, maximum, expected, reason):
    replicas, status = normalize(Autoscaler(), current, desired, at=0.0, minimum=minimum, maximum=maximum)
    assert replicas == expected
    limited = condition_of(status, "ScalingLimited")
    assert limited["reason"] == reason
    assert limited["status"] == ("False" if reason == "DesiredWithinRange" else "True")


async def test_scale_down_stabilization_window_with_a_fake_clock():
    clock, autoscaler = FakeClock(), Autoscaler()
    autoscaler.record_initial("default/web", 5, clock.now())
    replicas, status = normalize(autoscaler, 5, 2, at=clock.now())
    assert replicas == 5
    assert condition_of(status, "AbleToScale")["reason"] == "ScaleDownStabilized"
    await clock.advance(299)
    assert normalize(autoscaler, 5, 2, at=clock.now())[0] == 5
    await clock.advance(2)  # the recommendation of 5 is older than 300 s now
    replicas, status = normalize(autoscaler, 5, 2, at=clock.now())
    assert replicas == 2
    assert condition_of(status, "AbleToScale")["reason"] == "ReadyForNewScale"


def test_scale_up_is_not_stabilized_by_default():
    autoscaler = Autoscaler()
    autoscaler.record_initial("default/web", 2, 0.0)
    assert normalize(autoscaler, 2, 4, at=1.0)[0] == 4


def test_behavior_defaults():
    up, down = scaling_rules({})
    assert up == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                  "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                               {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert down["stabilizationWindowSeconds"] == 300 and down["policies"] == [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]
    up, _ = scaling_rules({"scaleUp": {"stabilizationWindowSeconds": 60}})
    assert up["stabilizationWindowSeconds"] == 60 and len(up["policies"]) == 2


@pytest.mark.parametrize("behavior, current, desired, expected, reason", [
    ({}, 2, 20, 6, "ScaleUpLimit"),  # Max of Pods (2 + 4) and Percent (2 * 2)
    ({"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}, 2, 5, 3, "ScaleUpLimit"),
    ({"scaleUp": {"selectPolicy": "Min", "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60},
                                                      {"type": "Percent", "value": 50, "periodSeconds": 60}]}},
     4, 10, 6, "ScaleUpLimit"),
    ({"scaleUp": {"selectPolicy": "Disabled"}}, 3, 6, 3, "ScaleUpLimit"),
    ({"scaleDown": {"stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}, 10, 1, 5, "ScaleDownLimit"),
    ({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}, 4, 2, 4, "ScaleDownLimit"),
    ({"scaleDown": {"stabilizationWindowSeconds": 0}}, 4, 0, 1, "TooFewReplicas"),
    ({}, 4, 30, 8, "ScaleUpLimit"),
    ({}, 8, 30, 10, "TooManyReplicas"),
])
def test_behavior_policies(behavior, current, desired, expected, reason):
    autoscaler = Autoscaler()
    replicas, status = normalize(autoscaler, current, desired, at=0.0, behavior=behavior)
    assert (replicas, condition_of(status, "ScalingLimited")["reason"]) == (expected, reason)


async def test_policy_period_counts_earlier_scale_events():
    clock, autoscaler = FakeClock(), Autoscaler()
    behavior = {"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}
    assert normalize(autoscaler, 2, 10, at=clock.now(), behavior=behavior)[0] == 4
    autoscaler.store_scale_event("default/web", behavior, 2, 4, clock.now())
    await clock.advance(30)
    assert normalize(autoscaler, 4, 10, at=clock.now(), behavior=behavior)[0] == 4  # 2 already added this minute
    await clock.advance(31)
    assert normalize(autoscaler, 4, 10, at=clock.now(), behavior=behavior)[0] == 6


async def test_scale_up_stabilization_window_with_behavior():
    clock, autoscaler = FakeClock(), Autoscaler()
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 60}}
    autoscaler.record_initial("default/web", 2, clock.now())
    replicas, status = normalize(autoscaler, 2, 5, at=clock.now(), behavior=behavior)
    assert replicas == 2
    assert condition_of(status, "AbleToScale")["reason"] == "ScaleUpStabilized"
    await clock.advance(61)
    assert normalize(autoscaler, 2, 5, at=clock.now(), behavior=behavior)[0] == 5


def test_condition_transition_time_moves_only_on_flips():
    status: dict = {}
    normalize(Autoscaler(), 3, 5, at=0.0, status=status)
    first = condition_of(status, "ScalingLimited")["lastTransitionTime"]
    status["conditions"][-1]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    normalize(Autoscaler(), 3, 4, at=0.0, status=status)
    assert first and condition_of(status, "ScalingLimited")["lastTransitionTime"] == "2000-01-01T00:00:00Z"


@pytest.mark.parametrize("spec, status, text", [
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                               "averageUtilization": 50}}}]},
     {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 80}}}]},
     "cpu: 80%/50%"),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                               "averageUtilization": 50}}}]},
     {}, "cpu: <unknown>/50%"),
    ({"metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                                  "averageValue": "100Mi"}}}]},
     {"currentMetrics": [{"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "50Mi"}}}]},
     "memory: 50Mi/100Mi"),
    ({"targetCPUUtilizationPercentage": 50}, {"currentCPUUtilizationPercentage": 20}, "cpu: 20%/50%"),
    ({"metrics": []}, {}, "<none>"),
])
def test_targets_column(spec, status, text):
    assert _hpa_targets(spec, status) == text
