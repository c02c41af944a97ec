"""HorizontalPodAutoscaler: scale a workload's `/scale` to keep its pods' resource usage near a target.

kube-controller-manager 1.32's podautoscaler, for `Resource` (and `ContainerResource`) metrics: cpu or
memory, `Utilization` (percent of the pods' requests) or `AverageValue` targets, read from
metrics.k8s.io (which the pinnace API server serves from the kubelets' `/stats/summary`). Every
`horizontal_pod_autoscaler_sync_period` (15 s) per HPA:

1. Read the target's scale subresource (`spec.scaleTargetRef`: any kind with `/scale`); AbleToScale
   False/FailedGetScale when it cannot.
2. Replicas 0 on the target disables autoscaling (ScalingActive False/ScalingDisabled); replicas
   outside [minReplicas, maxReplicas] are brought inside first.
3. Otherwise each metric proposes `ceil(readyPods * current / target)`, unchanged within the 0.1
   tolerance. As the replica calculator does: deleted and Failed pods are ignored; Pending pods, and
   for cpu pods not yet ready (or ready for less than one metric window within the 5-minute cpu
   initialization period) are left out, and on a scale-up count as using nothing; pods without metrics
   count as using nothing on a scale-up and their request (Utilization: max(100%, target); AverageValue:
   the target) on a scale-down; a result that flips direction keeps the current count. The largest
   proposal wins; metrics that fail are ignored unless all fail or the others would scale down.
4. Stabilize and rate-limit: without `spec.behavior`, the highest recommendation of the last 300 s
   (`horizontal_pod_autoscaler_downscale_stabilization`) and at most max(2 * current, 4); with it,
   the scaleUp/scaleDown stabilization windows and Pods/Percent policies with selectPolicy
   Max/Min/Disabled, Kubernetes' defaults filling what the spec leaves out. min/max clamp
   (ScalingLimited).
5. Write the new replicas through `/scale` (event SuccessfulRescale "New size: N; reason: ..."), then
   status: currentReplicas, desiredReplicas, currentMetrics, lastScaleTime and the conditions
   AbleToScale, ScalingActive, ScalingLimited with Kubernetes' reasons and messages.

Where pinnace differs: a new HPA, or one whose spec changed, is reconciled at once rather than at the
next sync period (Kubernetes' queue rate-limits every add to one per period); the scale target's
selector is not checked for overlap with other HPAs (Kubernetes' AmbiguousSelector); `Pods`, `Object`
and `External` metrics need a custom or external metrics API, which pinnace does not serve: such a
metric is reported invalid (ScalingActive False, FailedGet<Type>Metric) exactly as Kubernetes reports
it without those APIs, never silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pinnace.api.quantity import parse_quantity
from pinnace.api.selectors import SelectorError, parse_label_selector
from pinnace.client import ApiError, NotFound
from pinnace.client.clock import SYSTEM_CLOCK, Clock
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    format_time,
    is_being_deleted,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    now,
    parse_time,
    status_equal,
)

log = logging.getLogger(__name__)

RESOURCE = "autoscaling/v2/horizontalpodautoscalers"
POD_METRICS = "metrics.k8s.io/v1beta1/pods"

# kube-controller-manager's defaults (--horizontal-pod-autoscaler-*).
TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
INITIAL_READINESS_DELAY = 30.0
DOWNSCALE_STABILIZATION = 300.0
# Without spec.behavior a scale-up goes to at most max(2 * current, 4) at once.
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0

# autoscaling/v2 defaulting (GenerateHPAScaleUpRules / GenerateHPAScaleDownRules); the scale-down
# stabilization window, when not given, is the controller's downscale stabilization (300 s).
DEFAULT_SCALE_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]}
DEFAULT_SCALE_DOWN = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}

_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)


class MetricError(Exception):
    """A metric could not give a replica count; the message is what Kubernetes would say."""


# --- reading metrics and pods -----------------------------------------------------------------------


@dataclasses.dataclass
class PodMetric:
    value: int  # milli-units: millicores for cpu, millibytes for memory (Kubernetes' MilliValue)
    timestamp: dt.datetime | None = None
    window: float = 0.0


def milli_value(quantity: Any) -> int:
    """Kubernetes' Quantity.MilliValue(): rounded up to a whole milli-unit."""
    return math.ceil(parse_quantity(quantity) * 1000)


def format_milli(milli: int) -> str:
    """A milli-value as resource.NewMilliQuantity(v, DecimalSI).String() prints it: 250m, 2, 200M."""
    if milli % 1000:
        return f"{milli}m"
    value, suffixes = milli // 1000, ["", "k", "M", "G", "T", "P", "E"]
    exponent = 0
    while value and value % 1000 == 0 and exponent < len(suffixes) - 1:
        value //= 1000
        exponent += 1
    return f"{value}{suffixes[exponent]}"


def _duration(text: str | None) -> float:
    """A Go duration as metrics-server writes a window ("10.062s", "1m0s")."""
    if not text:
        return 0.0
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        char = text[i]
        if char.isdigit() or char == ".":
            number += char
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else char
        total += float(number or 0) * units.get(unit, 0.0)
        number = ""
        i += len(unit)
    return total


def resource_metrics(items: Iterable[Mapping[str, Any]], resource: str, container: str = "") -> dict[str, PodMetric]:
    """pod name -> its usage of `resource`, as the HPA's metrics client sums it from PodMetrics: a pod
    missing the resource in any counted container (or missing `container`) has no metric."""
    metrics: dict[str, PodMetric] = {}
    for item in items:
        total, found = 0, False
        missing = False
        for entry in item.get("containers") or ():
            if container and entry.get("name") != container:
                continue
            usage = (entry.get("usage") or {}).get(resource)
            if usage is None:
                missing = True
                break
            total += milli_value(usage)
            found = True
        if missing or (container and not found):
            continue
        metrics[item["metadata"]["name"]] = PodMetric(total, parse_time(item.get("timestamp")),
                                                      _duration(item.get("window")))
    return metrics


def pod_requests(pods: Iterable[Mapping[str, Any]], resource: str, container: str = "") -> dict[str, int]:
    """pod name -> the sum of its containers' requests (milli-units), counting sidecars (restartable
    init containers); a container without a request for `resource` makes utilization undefined."""
    requests: dict[str, int] = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        containers = [*(spec.get("containers") or ()),
                      *(c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always")]
        total = 0
        for entry in containers:
            if container and entry.get("name") != container:
                continue
            request = ((entry.get("resources") or {}).get("requests") or {}).get(resource)
            if request is None:
                raise MetricError(f"missing request for {resource} in container {entry.get('name')} "
                                  f"of Pod {name_of(pod)}")
            total += milli_value(request)
        requests[name_of(pod)] = total
    return requests


def _ready_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition
    return None


@dataclasses.dataclass
class PodGroups:
    ready: int
    unready: set[str]
    missing: set[str]
    ignored: set[str]


def group_pods(pods: Iterable[Mapping[str, Any]], metrics: Mapping[str, PodMetric], resource: str,
               at: dt.datetime, cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
               initial_readiness_delay: float = INITIAL_READINESS_DELAY) -> PodGroups:
    """Kubernetes' groupPods: which pods' metrics count, which are unready, missing or ignored."""
    groups = PodGroups(0, set(), set(), set())
    for pod in pods:
        name, status = name_of(pod), pod.get("status") or {}
        if is_being_deleted(pod) or status.get("phase") == "Failed":
            groups.ignored.add(name)
            continue
        if status.get("phase") == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu":
            condition, started = _ready_condition(pod), parse_time(status.get("startTime"))
            if condition is None or started is None:
                unready = True
            else:
                transition = parse_time(condition.get("lastTransitionTime")) or started
                if started + dt.timedelta(seconds=cpu_initialization_period) > at:
                    # Within initialization: unready, or no full metric window since it became ready.
                    unready = condition.get("status") == "False" or (
                        metric.timestamp is not None
                        and metric.timestamp < transition + dt.timedelta(seconds=metric.window))
                else:
                    # Later: left out only if it has never been ready.
                    unready = (condition.get("status") == "False"
                               and started + dt.timedelta(seconds=initial_readiness_delay) > transition)
            if unready:
                groups.unready.add(name)
                continue
        groups.ready += 1
    return groups


def utilization_ratio(metrics: Mapping[str, PodMetric], requests: Mapping[str, int],
                      target_utilization: int) -> tuple[float, int, int]:
    """(usage / target ratio, current utilization %, average usage in milli-units): GetResourceUtilizationRatio."""
    metrics_total = requests_total = entries = 0
    for name, metric in metrics.items():
        if name not in requests:
            continue  # a metric for a pod the selector no longer selects
        metrics_total += metric.value
        requests_total += requests[name]
        entries += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = metrics_total * 100 // requests_total
    return utilization / target_utilization, utilization, metrics_total // entries


def usage_ratio(metrics: Mapping[str, PodMetric], target: int) -> tuple[float, int]:
    usage = sum(m.value for m in metrics.values()) // len(metrics)
    return usage / target, usage


def resource_replicas(current_replicas: int, target_utilization: int, resource: str, pods: list[Object],
                      metrics: dict[str, PodMetric], at: dt.datetime, *, container: str = "",
                      tolerance: float = TOLERANCE, cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
                      initial_readiness_delay: float = INITIAL_READINESS_DELAY) -> tuple[int, int, int]:
    """(replicas, current utilization %, average usage) for a Utilization target: GetResourceReplicas."""
    metrics, groups = _counted_metrics(pods, metrics, resource, at, cpu_initialization_period, initial_readiness_delay)
    requests = pod_requests(pods, resource, container)
    ratio, utilization, raw = utilization_ratio(metrics, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if abs(1.0 - ratio) <= tolerance:
            return current_replicas, utilization, raw
        return math.ceil(ratio * groups.ready), utilization, raw
    if groups.missing:
        if ratio < 1.0:  # scale-down: missing pods use their request (or the target, above 100%)
            fallback = max(100, target_utilization)
            for name in groups.missing:
                metrics[name] = PodMetric(requests[name] * fallback // 100)
        elif ratio > 1.0:  # scale-up: missing pods use nothing
            for name in groups.missing:
                metrics[name] = PodMetric(0)
    if scale_up_with_unready:
        for name in groups.unready:
            metrics[name] = PodMetric(0)
    new_ratio, _, _ = utilization_ratio(metrics, requests, target_utilization)
    return _second_pass(current_replicas, ratio, new_ratio, len(metrics), tolerance), utilization, raw


def raw_resource_replicas(current_replicas: int, target_milli: int, resource: str, pods: list[Object],
                          metrics: dict[str, PodMetric], at: dt.datetime, *, tolerance: float = TOLERANCE,
                          cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
                          initial_readiness_delay: float = INITIAL_READINESS_DELAY) -> tuple[int, int]:
    """(replicas, average usage in milli-units) for an AverageValue target: GetRawResourceReplicas."""
    metrics, groups = _counted_metrics(pods, metrics, resource, at, cpu_initialization_period, initial_readiness_delay)
    ratio, usage = usage_ratio(metrics, target_milli)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if abs(1.0 - ratio) <= tolerance:
            return current_replicas, usage
        return math.ceil(ratio * groups.ready), usage
    if groups.missing:
        fallback = target_milli if ratio < 1.0 else 0  # scale-down: exactly the target; scale-up: nothing
        for name in groups.missing:
            metrics[name] = PodMetric(fallback)
    if scale_up_with_unready:
        for name in groups.unready:
            metrics[name] = PodMetric(0)
    new_ratio, _ = usage_ratio(metrics, target_milli)
    return _second_pass(current_replicas, ratio, new_ratio, len(metrics), tolerance), usage


def _counted_metrics(pods: list[Object], metrics: dict[str, PodMetric], resource: str, at: dt.datetime,
                     cpu_initialization_period: float, initial_readiness_delay: float) -> tuple[dict[str, PodMetric], PodGroups]:
    """The metrics of the pods that count at first (not ignored, not unready), and the pods' groups."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    metrics = dict(metrics)
    groups = group_pods(pods, metrics, resource, at, cpu_initialization_period, initial_readiness_delay)
    for name in groups.ignored | groups.unready:
        metrics.pop(name, None)
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return metrics, groups


def _second_pass(current_replicas: int, ratio: float, new_ratio: float, counted: int, tolerance: float) -> int:
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current_replicas  # too small a change, or the fallbacks flip the direction
    replicas = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and replicas > current_replicas) or (new_ratio > 1.0 and replicas < current_replicas):
        return current_replicas
    return replicas


# --- stabilization and rate limits ------------------------------------------------------------------


@dataclasses.dataclass
class Recommendation:
    replicas: int
    at: float  # the controller clock's seconds


@dataclasses.dataclass
class ScaleEvent:
    change: int
    at: float


def scaling_rules(behavior: Mapping[str, Any], downscale_stabilization: float = DOWNSCALE_STABILIZATION
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """spec.behavior's scaleUp and scaleDown with Kubernetes' defaults for what is not given."""
    def fill(rules: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict[str, Any]:
        filled = copy.deepcopy(dict(default))
        for field, value in (rules or {}).items():
            if value is not None and value != []:
                filled[field] = copy.deepcopy(value)
        return filled

    up = fill(behavior.get("scaleUp"), DEFAULT_SCALE_UP)
    down = fill(behavior.get("scaleDown"),
                {**DEFAULT_SCALE_DOWN, "stabilizationWindowSeconds": int(downscale_stabilization)})
    return up, down


def set_condition(status: Object, type_: str, value: str, reason: str, message: str, at: str | None = None) -> None:
    """Kubernetes' setConditionInList: lastTransitionTime moves only when the status flips."""
    conditions = status.setdefault("conditions", [])
    existing = next((c for c in conditions if c.get("type") == type_), None)
    if existing is None:
        existing = {"type": type_}
        conditions.append(existing)
    if existing.get("status") != value:
        existing["lastTransitionTime"] = at or format_time()
    existing.update(status=value, reason=reason, message=message)


def condition_of(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), None)


class Autoscaler:
    """What kube-controller-manager remembers per HPA between passes (in memory, as it does): recent
    recommendations for stabilization and recent scale events for the behavior policies. Times are
    seconds of the clock the controller passes in (a fake one in tests)."""

    def __init__(self, downscale_stabilization: float = DOWNSCALE_STABILIZATION) -> None:
        self.downscale_stabilization = downscale_stabilization
        self.recommendations: dict[str, list[Recommendation]] = {}
        self.scale_up_events: dict[str, list[ScaleEvent]] = {}
        self.scale_down_events: dict[str, list[ScaleEvent]] = {}

    def forget(self, key: str) -> None:
        for memory in (self.recommendations, self.scale_up_events, self.scale_down_events):
            memory.pop(key, None)

    def record_initial(self, key: str, current_replicas: int, at: float) -> None:
        if key not in self.recommendations:
            self.recommendations[key] = [Recommendation(current_replicas, at)]

    def _record(self, key: str, desired: int, at: float, old: int | None) -> None:
        entry = Recommendation(desired, at)
        history = self.recommendations.setdefault(key, [])
        if old is not None:
            history[old] = entry  # reuse a slot that fell out of every window
        else:
            history.append(entry)

    def normalize(self, key: str, status: Object, current: int, desired: int, min_replicas: int,
                  max_replicas: int, behavior: Mapping[str, Any] | None, at: float) -> int:
        """The replica count to scale to, after stabilization and rate limits; sets AbleToScale and
        ScalingLimited in `status` (normalizeDesiredReplicas / ...WithBehaviors)."""
        if behavior is None:
            stabilized = self._stabilize(key, desired, at)
            if stabilized != desired:
                set_condition(status, "AbleToScale", "True", "ScaleDownStabilized", "recent recommendations were "
                              "higher than current one, applying the highest recent recommendation")
            else:
                set_condition(status, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
            final, reason, message = _limit_without_behavior(current, stabilized, min_replicas, max_replicas)
        else:
            up, down = scaling_rules(behavior, self.downscale_stabilization)
            stabilized, reason, message = self._stabilize_with_behaviors(key, current, desired, up, down, at)
            if stabilized != desired:
                set_condition(status, "AbleToScale", "True", reason, message)
            else:
                set_condition(status, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
            final, reason, message = self._limit_with_behavior(key, current, stabilized, min_replicas, max_replicas,
                                                               up, down, at)
        set_condition(status, "ScalingLimited", "False" if final == stabilized else "True", reason, message)
        return final

    def _stabilize(self, key: str, desired: int, at: float) -> int:
        """Without behavior: the highest recommendation within the downscale stabilization window."""
        highest, old = desired, None
        for i, rec in enumerate(self.recommendations.get(key) or ()):
            if rec.at < at - self.downscale_stabilization:
                old = i
            elif rec.replicas > highest:
                highest = rec.replicas
        self._record(key, desired, at, old)
        return highest

    def _stabilize_with_behaviors(self, key: str, current: int, desired: int, up: Mapping[str, Any],
                                  down: Mapping[str, Any], at: float) -> tuple[int, str, str]:
        up_cutoff = at - float(up.get("stabilizationWindowSeconds") or 0)
        down_cutoff = at - float(down.get("stabilizationWindowSeconds") or 0)
        up_recommendation = down_recommendation = desired
        old = None
        for i, rec in enumerate(self.recommendations.get(key) or ()):
            if rec.at > up_cutoff:
                up_recommendation = min(rec.replicas, up_recommendation)
            if rec.at > down_cutoff:
                down_recommendation = max(rec.replicas, down_recommendation)
            if rec.at < up_cutoff and rec.at < down_cutoff:
                old = i
        recommendation = min(max(current, up_recommendation), down_recommendation)
        self._record(key, desired, at, old)
        if desired >= current:
            return recommendation, "ScaleUpStabilized", ("recent recommendations were lower than current one, "
                                                         "applying the lowest recent recommendation")
        return recommendation, "ScaleDownStabilized", ("recent recommendations were higher than current one, "
                                                       "applying the highest recent recommendation")

    def _changed(self, events: Iterable[ScaleEvent], period: float, at: float) -> int:
        return sum(e.change for e in events if e.at > at - period)

    def _limit_with_behavior(self, key: str, current: int, desired: int, min_replicas: int, max_replicas: int,
                             up: Mapping[str, Any], down: Mapping[str, Any], at: float) -> tuple[int, str, str]:
        ups, downs = self.scale_up_events.get(key) or [], self.scale_down_events.get(key) or []
        if desired > current:
            limit = max(self._scale_limit(current, ups, downs, up, at, scale_up=True), current)
            if max_replicas > limit:
                allowed, reason, message = limit, "ScaleUpLimit", ("the desired replica count is increasing faster "
                                                                   "than the maximum scale rate")
            else:
                allowed, reason, message = max_replicas, "TooManyReplicas", ("the desired replica count is more than "
                                                                             "the maximum replica count")
            if desired > allowed:
                return allowed, reason, message
        elif desired < current:
            limit = min(self._scale_limit(current, ups, downs, down, at, scale_up=False), current)
            if min_replicas < limit:
                allowed, reason, message = limit, "ScaleDownLimit", ("the desired replica count is decreasing faster "
                                                                     "than the maximum scale rate")
            else:
                allowed, reason, message = min_replicas, "TooFewReplicas", ("the desired replica count is less than "
                                                                            "the minimum replica count")
            if desired < allowed:
                return allowed, reason, message
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def _scale_limit(self, current: int, ups: list[ScaleEvent], downs: list[ScaleEvent], rules: Mapping[str, Any],
                     at: float, *, scale_up: bool) -> int:
        """calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors."""
        select = rules.get("selectPolicy") or "Max"
        if select == "Disabled":
            return current
        # Max picks the biggest change: the highest limit up, the lowest down; Min the opposite.
        pick = (max if select != "Min" else min) if scale_up else (min if select != "Min" else max)
        result: int | None = None
        for policy in rules.get("policies") or ():
            period = float(policy.get("periodSeconds") or 0)
            start = current - self._changed(ups, period, at) + self._changed(downs, period, at)
            value = int(policy.get("value") or 0)
            if policy.get("type") == "Pods":
                proposed = start + value if scale_up else start - value
            elif scale_up:  # Percent, rounded up so that a small percentage still adds a pod
                proposed = math.ceil(start * (1 + value / 100))
            else:
                proposed = int(start * (1 - value / 100))
            result = proposed if result is None else pick(result, proposed)
        if result is None:  # no policies: Kubernetes' fold starts from the int32 extreme
            return (_INT32_MIN if select != "Min" else _INT32_MAX) if scale_up else (
                _INT32_MAX if select != "Min" else _INT32_MIN)
        return result

    def store_scale_event(self, key: str, behavior: Mapping[str, Any] | None, previous: int, new: int, at: float) -> None:
        """Remember a rescale for the behavior policies' periods (only with spec.behavior, as Kubernetes)."""
        if behavior is None or new == previous:
            return
        up, down = scaling_rules(behavior, self.downscale_stabilization)
        rules, memory = (up, self.scale_up_events) if new > previous else (down, self.scale_down_events)
        longest = max((float(p.get("periodSeconds") or 0) for p in rules.get("policies") or ()), default=0.0)
        events = [e for e in memory.get(key) or () if e.at > at - longest]
        events.append(ScaleEvent(abs(new - previous), at))
        memory[key] = events


def _limit_without_behavior(current: int, desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str, str]:
    """convertDesiredReplicasWithRules: min/max and the max(2 * current, 4) scale-up limit."""
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit:
        maximum, reason, message = scale_up_limit, "ScaleUpLimit", ("the desired replica count is increasing faster "
                                                                    "than the maximum scale rate")
    else:
        maximum, reason, message = max_replicas, "TooManyReplicas", ("the desired replica count is more than the "
                                                                     "maximum replica count")
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    if desired > maximum:
        return maximum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


# --- the controller ---------------------------------------------------------------------------------

_UNSERVED = {"Pods": ("FailedGetPodsMetric", "custom.metrics.k8s.io"),
             "Object": ("FailedGetObjectMetric", "custom.metrics.k8s.io"),
             "External": ("FailedGetExternalMetric", "external.metrics.k8s.io")}


class MetricFailure(Exception):
    """One metric failed: `reason` names the ScalingActive condition, `detail` is its message's error."""

    def __init__(self, reason: str, detail: str, error: str) -> None:
        super().__init__(error)
        self.reason, self.detail = reason, detail


class HorizontalPodAutoscalerController(BaseController):
    """Scales each HPA's target to keep its Resource metrics at their targets (see the module doc)."""

    name = "horizontalpodautoscaling"
    clock: Clock = SYSTEM_CLOCK

    def setup(self) -> None:
        self.autoscaler = Autoscaler(self.config.horizontal_pod_autoscaler_downscale_stabilization)
        self.hpas = self.informer(RESOURCE)
        self.pods = self.pod_informer()
        self.hpas.add_handler(on_add=self.enqueue, on_update=self._hpa_updated,
                              on_delete=lambda hpa: self.autoscaler.forget(key_of(hpa)))

    def _hpa_updated(self, old: Object, new: Object) -> None:
        # Our own status writes must not trigger a pass: the next one is due at the sync period.
        if old.get("spec") != new.get("spec"):
            self.enqueue(new)

    async def reconcile(self, key: str) -> None:
        cached = self.hpas.get(key)
        if cached is None:
            self.autoscaler.forget(key)
            return
        if is_being_deleted(cached):
            return
        try:
            await self.reconcile_autoscaler(copy.deepcopy(cached), key)
        finally:
            self.enqueue_after(key, self.config.horizontal_pod_autoscaler_sync_period)

    async def reconcile_autoscaler(self, hpa: Object, key: str) -> None:
        spec, old_status = hpa.get("spec") or {}, copy.deepcopy(hpa.get("status") or {})
        status: Object = copy.deepcopy(old_status)
        status.setdefault("currentReplicas", 0)
        status.setdefault("desiredReplicas", 0)
        ref = spec.get("scaleTargetRef") or {}
        namespace = namespace_of(hpa)
        reference = f"{ref.get('kind')}/{namespace}/{ref.get('name')}"
        try:
            resource = await self.client.resource_for(ref.get("apiVersion") or "", ref.get("kind") or "")
            scale = await self.client.get_subresource(resource, ref.get("name") or "", "scale", namespace=namespace)
        except (ApiError, KeyError, ValueError) as error:
            message = _error_text(error)
            self.record(hpa, "Warning", "FailedGetScale", message)
            set_condition(status, "AbleToScale", "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: {message}")
            await self._write_status(hpa, old_status, status)
            log.info("failed to query scale subresource for %s: %s", reference, message)
            return
        set_condition(status, "AbleToScale", "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale")
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        at = self.clock.now()
        self.autoscaler.record_initial(key, current, at)
        min_replicas = int(spec.get("minReplicas", 1) if spec.get("minReplicas") is not None else 1)
        max_replicas = int(spec.get("maxReplicas") or 0)
        metric_statuses: list[Object] | None = None  # none when not computed, as Kubernetes
        desired, reason, rescale = 0, "", False
        if current == 0 and min_replicas != 0:
            set_condition(status, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero")
        elif current > max_replicas:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            proposal, metric_name, metric_statuses, error = await self.compute_replicas_for_metrics(
                hpa, status, scale, current)
            if proposal == -1:
                status.update(currentReplicas=current, currentMetrics=metric_statuses or None)
                self.record(hpa, "Warning", "FailedComputeMetricsReplicas", error or "")
                await self._write_status(hpa, old_status, status)
                return
            if proposal > desired:
                desired = proposal
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "All metrics below target"
            desired = self.autoscaler.normalize(key, status, current, desired, min_replicas, max_replicas,
                                                spec.get("behavior"), at)
        rescale = desired != current and not (current == 0 and min_replicas != 0)
        if rescale:
            scale["spec"]["replicas"] = desired
            try:
                await self.client.replace_subresource(resource, ref["name"], "scale", scale, namespace=namespace)
            except ApiError as error:
                message = _error_text(error)
                self.record(hpa, "Warning", "FailedRescale", f"New size: {desired}; reason: {reason}; error: {message}")
                set_condition(status, "AbleToScale", "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {message}")
                status.update(currentReplicas=current, currentMetrics=metric_statuses or None)
                await self._write_status(hpa, old_status, status)
                return
            set_condition(status, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}")
            self.record(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            self.autoscaler.store_scale_event(key, spec.get("behavior"), current, desired, at)
            log.info("successful rescale of %s, old size: %d, new size: %d, reason: %s", key, current, desired, reason)
        else:
            desired = current
        status.update(currentReplicas=current, desiredReplicas=desired, currentMetrics=metric_statuses or None)
        if rescale:
            status["lastScaleTime"] = format_time()
        await self._write_status(hpa, old_status, status)

    async def compute_replicas_for_metrics(self, hpa: Object, status: Object, scale: Object, current: int
                                           ) -> tuple[int, str, list[Object], str | None]:
        """(replicas, the metric that asked for them, currentMetrics, error): -1 replicas when no metric
        gave a count, or when a metric failed and the others would scale down (computeReplicasForMetrics)."""
        selector_text = (scale.get("status") or {}).get("selector") or ""
        if not selector_text:
            self.record(hpa, "Warning", "SelectorRequired", "selector is required")
            set_condition(status, "ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector")
            return -1, "", [], "selector is required"
        try:
            selector = parse_label_selector(selector_text)
        except SelectorError as error:
            message = f"couldn't convert selector into a corresponding internal selector object: {error}"
            self.record(hpa, "Warning", "InvalidSelector", message)
            set_condition(status, "ScalingActive", "False", "InvalidSelector", message)
            return -1, "", [], message
        specs = (hpa.get("spec") or {}).get("metrics") or []
        statuses: list[Object] = [{"type": ""} for _ in specs]
        replicas, metric, invalid, first_failure = 0, "", 0, None
        for i, metric_spec in enumerate(specs):
            try:
                proposal, name, statuses[i] = await self.compute_replicas_for_metric(
                    hpa, metric_spec, current, selector_text, selector)
            except MetricFailure as failure:
                if first_failure is None:
                    first_failure = failure
                invalid += 1
                continue
            if replicas == 0 or proposal > replicas:
                replicas, metric = proposal, name
        error = None
        if first_failure is not None:
            error = f"invalid metrics ({invalid} invalid out of {len(specs)}), first error is: {first_failure}"
        if not specs or invalid >= len(specs) or (invalid and replicas < current):
            if first_failure is not None:
                set_condition(status, "ScalingActive", "False", first_failure.reason,
                              f"the HPA was unable to compute the replica count: {first_failure.detail}")
            return -1, "", statuses, error or "no metrics to scale on"
        set_condition(status, "ScalingActive", "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {metric}")
        return replicas, metric, statuses, error

    async def compute_replicas_for_metric(self, hpa: Object, metric_spec: Mapping[str, Any], current: int,
                                          selector_text: str, selector: Any) -> tuple[int, str, Object]:
        """(replicas, metric name for events, its MetricStatus), or MetricFailure (after its event)."""
        kind = metric_spec.get("type")
        if kind in ("Resource", "ContainerResource"):
            source = metric_spec.get("resource" if kind == "Resource" else "containerResource") or {}
            resource = source.get("name") or ""
            try:
                replicas, value, name = await self._resource_metric(
                    hpa, current, source.get("target") or {}, resource, source.get("container") or "",
                    selector_text, selector, kind)
            except MetricError as error:
                reason = "FailedGetResourceMetric" if kind == "Resource" else "FailedGetContainerResourceMetric"
                self.record(hpa, "Warning", reason, str(error))
                label = "resource" if kind == "Resource" else "container resource"
                raise MetricFailure(reason, str(error),
                                    f"failed to get {resource} {label} metric value: {error}") from error
            field = "resource" if kind == "Resource" else "containerResource"
            entry: Object = {"name": resource, "current": value}
            if kind == "ContainerResource":
                entry["container"] = source.get("container") or ""
            return replicas, name, {"type": kind, field: entry}
        if kind in _UNSERVED:
            reason, api = _UNSERVED[kind]
            source = metric_spec.get(kind.lower()) or metric_spec.get("pods") or {}
            metric_name = (source.get("metric") or {}).get("name", "")
            detail = (f"unable to get metric {metric_name}: unable to fetch metrics from {api}: "
                      f"pinnace does not serve {api}; only Resource and ContainerResource metrics are supported")
            self.record(hpa, "Warning", reason, detail)
            raise MetricFailure(reason, detail, f"failed to get {kind.lower()} metric value: {detail}")
        detail = f'unknown metric source type "{kind}"'
        self.record(hpa, "Warning", "InvalidMetricSourceType", detail)
        raise MetricFailure("InvalidMetricSourceType", detail, detail)

    async def _resource_metric(self, hpa: Object, current: int, target: Mapping[str, Any], resource: str,
                               container: str, selector_text: str, selector: Any, kind: str) -> tuple[int, Object, str]:
        namespace = namespace_of(hpa) or "default"
        config = self.config
        options = {"tolerance": config.horizontal_pod_autoscaler_tolerance,
                   "cpu_initialization_period": config.horizontal_pod_autoscaler_cpu_initialization_period,
                   "initial_readiness_delay": config.horizontal_pod_autoscaler_initial_readiness_delay}
        if target.get("averageValue") is None and target.get("averageUtilization") is None:
            raise MetricError("invalid resource metric source: neither an average utilization target nor an "
                              "average value (usage) target was set")
        average_value = target.get("averageValue")
        prefix = f"failed to get {resource} usage" if average_value is not None else f"failed to get {resource} utilization"
        try:
            try:
                metrics = await self._pod_metrics(namespace, selector_text, resource, container)
            except MetricError as error:
                raise MetricError(f"unable to get metrics for resource {resource}: {error}") from error
            pods = [p for p in self.pods.list() if namespace_of(p) == namespace and selector.matches(labels_of(p))]
            if average_value is not None:
                replicas, usage = raw_resource_replicas(current, milli_value(average_value), resource, pods,
                                                        metrics, now(), **options)
                return replicas, {"averageValue": format_milli(usage)}, f"{resource} resource"
            replicas, utilization, raw = resource_replicas(current, int(target["averageUtilization"]), resource, pods,
                                                           metrics, now(), container=container, **options)
        except MetricError as error:
            raise MetricError(f"{prefix}: {error}") from error
        name = f"{resource} resource utilization (percentage of request)"
        if kind == "ContainerResource":
            name = f"{resource} container resource utilization (percentage of request)"
        return replicas, {"averageUtilization": utilization, "averageValue": format_milli(raw)}, name

    async def _pod_metrics(self, namespace: str, selector_text: str, resource: str, container: str) -> dict[str, PodMetric]:
        try:
            listed = await self.client.list(POD_METRICS, namespace=namespace, label_selector=selector_text)
        except ApiError as error:
            raise MetricError(f"unable to fetch metrics from resource metrics API: {_error_text(error)}") from error
        items = listed.get("items") or []
        if not items:
            raise MetricError("no metrics returned from resource metrics API")
        return resource_metrics(items, resource, container)

    async def _write_status(self, hpa: Object, old: Object, new: Object) -> None:
        if status_equal(old, new) and old.get("conditions") == new.get("conditions"):
            return
        hpa["status"] = new
        try:
            await self.client.update_status(RESOURCE, hpa)
        except NotFound:
            pass


def _error_text(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return (error.status or {}).get("message") or str(error)
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else str(error)
    return str(error)
