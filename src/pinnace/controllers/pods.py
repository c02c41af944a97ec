"""Pod facts controllers agree on: active, ready, available, how to make one from a template, which to
delete first. Pure functions over pod dicts, with Kubernetes' definitions (pkg/controller/controller_utils).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pinnace.controllers.objects import Object, get_condition, now, owner_reference, parse_time


def phase_of(pod: Mapping[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return phase_of(pod) in ("Succeeded", "Failed")


def is_active(pod: Mapping[str, Any]) -> bool:
    """Counts toward a controller's replicas: not finished and not on its way out."""
    return not is_terminal(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_ready(pod: Mapping[str, Any]) -> bool:
    condition = get_condition(pod.get("status"), "Ready")
    return condition is not None and condition.get("status") == "True"


def ready_since(pod: Mapping[str, Any]) -> dt.datetime | None:
    condition = get_condition(pod.get("status"), "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def is_available(pod: Mapping[str, Any], min_ready_seconds: int, at: dt.datetime | None = None) -> bool:
    """Ready for at least `minReadySeconds` (Kubernetes' IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    if since is None:
        return False  # ready but no transition time: cannot prove availability yet
    return since + dt.timedelta(seconds=min_ready_seconds) <= (at or now())


def seconds_until_available(pod: Mapping[str, Any], min_ready_seconds: int, at: dt.datetime | None = None) -> float | None:
    """For a ready pod that is not yet available: how long until it is (to re-check then)."""
    since = ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    remaining = (since + dt.timedelta(seconds=min_ready_seconds) - (at or now())).total_seconds()
    return remaining if remaining > 0 else None


def restart_count(pod: Mapping[str, Any]) -> int:
    return sum(int(s.get("restartCount") or 0) for s in (pod.get("status") or {}).get("containerStatuses") or ())


def pod_from_template(template: Mapping[str, Any], owner: Mapping[str, Any], *, namespace: str,
                      name: str | None = None, extra_labels: Mapping[str, str] | None = None) -> Object:
    """A pod object built from a PodTemplateSpec, controlled by `owner`.

    Without an explicit name the server generates one from `<owner-name>-`, as Kubernetes does.
    """
    template_meta = template.get("metadata") or {}
    metadata: Object = {
        "namespace": namespace,
        "labels": {**(template_meta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    if template_meta.get("finalizers"):
        metadata["finalizers"] = list(template_meta["finalizers"])
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{owner['metadata']['name']}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {})}


# --- which pods go first ------------------------------------------------------------------------------

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Mapping[str, Any]) -> tuple:
    """Sort key: the pod to delete first sorts first (Kubernetes' ActivePods ordering).

    Unscheduled before scheduled, Pending before Unknown before Running, not ready before ready,
    ready for a shorter time before a longer one, more restarts before fewer, newer before older.
    """
    scheduled = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    phase = _PHASE_RANK.get(phase_of(pod), 3)
    ready = 1 if is_ready(pod) else 0
    since = ready_since(pod)
    # Newer readiness goes first: negate the timestamp so later times sort earlier.
    ready_key = -since.timestamp() if since else 0.0
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    created_key = -created.timestamp() if created else 0.0
    return (scheduled, phase, ready, ready_key, -restart_count(pod), created_key,
            (pod.get("metadata") or {}).get("name", ""))


def rank_for_deletion(pods: Iterable[Mapping[str, Any]]) -> list:
    return sorted(pods, key=deletion_rank)


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """Batch sizes 1, 2, 4, ... summing to `count`: a failing create costs one call, not `count`."""
    batches, remaining, size = [], count, initial
    while remaining > 0:
        batch = min(size, remaining)
        batches.append(batch)
        remaining -= batch
        size *= 2
    return batches
