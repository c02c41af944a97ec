"""Conversion between the versions of a kind that share storage.

Kubernetes 1.32 serves HorizontalPodAutoscalers as autoscaling/v1 and autoscaling/v2 from one stored
object. pinnace stores the v2 form and converts v1 requests and responses at the storage boundary:
v1's `targetCPUUtilizationPercentage` is v2's CPU `Utilization` resource metric, and
`currentCPUUtilizationPercentage` its current value. What v1 cannot express (other metrics,
`behavior`, status conditions) rides along in an annotation, as kube-apiserver does, so that a v1
read-modify-write keeps it.
"""

from __future__ import annotations

import copy

import orjson

V2_FIELDS_ANNOTATION = "autoscaling.pinnace.io/v2-fields"


def needs_conversion(group: str, version: str, plural: str) -> bool:
    return group == "autoscaling" and version == "v1" and plural == "horizontalpodautoscalers"


def _is_cpu_utilization(metric: dict) -> bool:
    resource = metric.get("resource") or {}
    return (
        metric.get("type") == "Resource"
        and resource.get("name") == "cpu"
        and (resource.get("target") or {}).get("type") == "Utilization"
    )


def hpa_v1_to_v2(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v2"
    meta = out.setdefault("metadata", {})
    annotations = meta.get("annotations") or {}
    extra = orjson.loads(annotations.pop(V2_FIELDS_ANNOTATION, "{}") or "{}")
    if not annotations and "annotations" in meta:
        meta.pop("annotations")
    spec = out.setdefault("spec", {})
    metrics = [m for m in extra.get("metrics") or [] if not _is_cpu_utilization(m)]
    cpu = spec.pop("targetCPUUtilizationPercentage", None)
    if cpu is not None:
        metrics.insert(0, {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}})
    if metrics:
        spec["metrics"] = metrics
    if extra.get("behavior"):
        spec["behavior"] = extra["behavior"]
    status = out.get("status")
    if isinstance(status, dict):
        current = status.pop("currentCPUUtilizationPercentage", None)
        current_metrics = [m for m in extra.get("currentMetrics") or [] if (m.get("resource") or {}).get("name") != "cpu"]
        if current is not None:
            current_metrics.insert(0, {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}})
        if current_metrics:
            status["currentMetrics"] = current_metrics
        if extra.get("conditions"):
            status["conditions"] = extra["conditions"]
    return out


def hpa_v2_to_v1(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.setdefault("spec", {})
    extra: dict = {}
    metrics = spec.pop("metrics", None) or []
    for metric in metrics:
        if _is_cpu_utilization(metric):
            spec["targetCPUUtilizationPercentage"] = metric["resource"]["target"].get("averageUtilization")
    others = [m for m in metrics if not _is_cpu_utilization(m)]
    if others:
        extra["metrics"] = others
    behavior = spec.pop("behavior", None)
    if behavior:
        extra["behavior"] = behavior
    status = out.get("status")
    if isinstance(status, dict):
        current_metrics = status.pop("currentMetrics", None) or []
        for metric in current_metrics:
            resource = metric.get("resource") or {}
            if resource.get("name") == "cpu" and "averageUtilization" in (resource.get("current") or {}):
                status["currentCPUUtilizationPercentage"] = resource["current"]["averageUtilization"]
        if [m for m in current_metrics if (m.get("resource") or {}).get("name") != "cpu"]:
            extra["currentMetrics"] = current_metrics
        conditions = status.pop("conditions", None)
        if conditions:
            extra["conditions"] = conditions
    if extra:
        out.setdefault("metadata", {}).setdefault("annotations", {})[V2_FIELDS_ANNOTATION] = orjson.dumps(extra).decode()
    return out
