"""Deployment rollout arithmetic, with no I/O: what each ReplicaSet's size should be next.

These are Kubernetes' rules (pkg/controller/deployment/util and rolling.go/recreate.go/sync.go):
- maxSurge rounds up, maxUnavailable rounds down; both zero means maxUnavailable 1.
- The new ReplicaSet grows while total pods stay <= replicas + maxSurge.
- Old ReplicaSets shrink while available pods stay >= replicas - maxUnavailable; unhealthy old pods
  go first, then the oldest ReplicaSets.
- A scaling event during a rollout spreads the change over the active ReplicaSets in proportion to
  their size (the `max-replicas` annotation remembers the size they were sized for).
- Revisions: the new ReplicaSet gets max(old revisions) + 1; a re-used old one moves up to that too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pinnace.controllers.objects import (
    POD_TEMPLATE_HASH,
    Object,
    annotations_of,
    canonical,
    format_time,
    get_condition,
    parse_time,
    scaled_value,
    stable_hash,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations that stay on the Deployment and are not copied to its ReplicaSets.
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}

# Condition reasons (Kubernetes' deploymentutil).
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


def replicas_of(obj: Mapping[str, Any]) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def status_count(obj: Mapping[str, Any] | None, field: str) -> int:
    return int(((obj or {}).get("status") or {}).get(field) or 0)


def revision_of(obj: Mapping[str, Any]) -> int:
    try:
        return int(annotations_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def is_rolling_update(deployment: Mapping[str, Any]) -> bool:
    return ((deployment["spec"].get("strategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"


def resolve_fenceposts(deployment: Mapping[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts for this Deployment."""
    if not is_rolling_update(deployment):
        return 0, 0
    rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    desired = replicas_of(deployment)
    surge = scaled_value(rolling.get("maxSurge"), desired, round_up=True, default="25%")
    unavailable = scaled_value(rolling.get("maxUnavailable"), desired, round_up=False, default="25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1  # otherwise no progress is possible
    return surge, unavailable


def max_unavailable(deployment: Mapping[str, Any]) -> int:
    if not is_rolling_update(deployment) or replicas_of(deployment) == 0:
        return 0
    return min(resolve_fenceposts(deployment)[1], replicas_of(deployment))


def max_surge(deployment: Mapping[str, Any]) -> int:
    return resolve_fenceposts(deployment)[0] if is_rolling_update(deployment) else 0


# --- templates and hashes ---------------------------------------------------------------------------


def template_without_hash(template: Mapping[str, Any]) -> Object:
    result = canonical(template)
    labels = (result.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH, None)
    return canonical(result)


def pod_template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    return stable_hash(template_without_hash(template), collision_count)


def templates_equal_ignoring_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return template_without_hash(a) == template_without_hash(b)


def find_new_replica_set(deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]) -> Object | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    template = deployment["spec"]["template"]
    for rs in sorted(replica_sets, key=creation_key):
        if templates_equal_ignoring_hash(rs["spec"]["template"], template):
            return rs  # type: ignore[return-value]
    return None


def creation_key(obj: Mapping[str, Any]) -> tuple:
    meta = obj.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("name") or "")


def max_revision(replica_sets: Sequence[Mapping[str, Any]]) -> int:
    return max((revision_of(rs) for rs in replica_sets), default=0)


def copied_annotations(deployment: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in annotations_of(deployment).items() if k not in _NOT_COPIED}


def revision_annotations(rs: Mapping[str, Any], new_revision: int) -> dict[str, str]:
    """The revision annotations a (re-used) new ReplicaSet should carry for `new_revision`."""
    current = annotations_of(rs).get(REVISION)
    result = {REVISION: str(new_revision)}
    if current and current != str(new_revision):
        history = [h for h in annotations_of(rs).get(REVISION_HISTORY, "").split(",") if h]
        history.append(current)
        result[REVISION_HISTORY] = ",".join(history)
    return result


# --- scaling the new and old ReplicaSets ------------------------------------------------------------


def new_rs_replicas_rolling(deployment: Mapping[str, Any], all_rs: Sequence[Mapping[str, Any]],
                            new_rs: Mapping[str, Any]) -> int:
    """How big the new ReplicaSet may be now under RollingUpdate (Kubernetes' NewRSNewReplicas)."""
    desired = replicas_of(deployment)
    current = replicas_of(new_rs)
    if current >= desired:
        return desired
    surge = max_surge(deployment)
    total = sum(replicas_of(rs) for rs in all_rs)
    allowed_total = desired + surge
    if total >= allowed_total:
        return current
    return current + min(allowed_total - total, desired - current)


def max_old_scale_down(deployment: Mapping[str, Any], all_rs: Sequence[Mapping[str, Any]],
                       new_rs: Mapping[str, Any] | None) -> int:
    """How many old pods may go now without dropping below replicas - maxUnavailable."""
    all_pods = sum(replicas_of(rs) for rs in all_rs)
    min_available = replicas_of(deployment) - max_unavailable(deployment)
    new_unavailable = (replicas_of(new_rs) - status_count(new_rs, "availableReplicas")) if new_rs else 0
    return all_pods - min_available - new_unavailable


def plan_old_scale_down(deployment: Mapping[str, Any], old_rs: Sequence[Mapping[str, Any]],
                        new_rs: Mapping[str, Any] | None) -> dict[str, int]:
    """New sizes for old ReplicaSets in this step of a rolling update: {name: replicas}.

    First unhealthy old pods are removed (they do not count as available, so removing them costs no
    availability), then available ones from the oldest ReplicaSets while enough pods stay available.
    """
    all_rs = [*old_rs, *([new_rs] if new_rs else [])]
    budget = max_old_scale_down(deployment, all_rs, new_rs)
    if budget <= 0 or sum(replicas_of(rs) for rs in old_rs) == 0:
        return {}
    sizes = {rs["metadata"]["name"]: replicas_of(rs) for rs in old_rs}
    # Unhealthy first.
    for rs in sorted(old_rs, key=creation_key):
        if budget <= 0:
            break
        name = rs["metadata"]["name"]
        unhealthy = sizes[name] - status_count(rs, "availableReplicas")
        if unhealthy <= 0:
            continue
        cut = min(unhealthy, budget)
        sizes[name] -= cut
        budget -= cut
    # Then available pods, oldest ReplicaSets first, while availability allows.
    min_available = replicas_of(deployment) - max_unavailable(deployment)
    available = sum(min(status_count(rs, "availableReplicas"), sizes[rs["metadata"]["name"]]) for rs in old_rs)
    available += status_count(new_rs, "availableReplicas") if new_rs else 0
    if available > min_available:
        remaining = available - min_available
        for rs in sorted(old_rs, key=creation_key):
            if remaining <= 0:
                break
            name = rs["metadata"]["name"]
            cut = min(sizes[name], remaining)
            sizes[name] -= cut
            remaining -= cut
    return {name: size for name, size in sizes.items()
            if size != replicas_of(next(rs for rs in old_rs if rs["metadata"]["name"] == name))}


def is_saturated(deployment: Mapping[str, Any], rs: Mapping[str, Any] | None) -> bool:
    if rs is None:
        return False
    desired = annotations_of(rs).get(DESIRED_REPLICAS)
    return (replicas_of(rs) == replicas_of(deployment) and desired == str(replicas_of(deployment))
            and status_count(rs, "availableReplicas") == replicas_of(deployment))


def is_scaling_event(deployment: Mapping[str, Any], active_rs: Sequence[Mapping[str, Any]]) -> bool:
    """The Deployment's replicas differ from what its active ReplicaSets were sized for."""
    for rs in active_rs:
        desired = annotations_of(rs).get(DESIRED_REPLICAS)
        if desired is not None and desired != str(replicas_of(deployment)):
            return True
    return False


def active_or_latest(new_rs: Mapping[str, Any] | None, old_rs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The single active ReplicaSet, or the latest if none is active; None when several are active."""
    all_rs = [rs for rs in [new_rs, *old_rs] if rs is not None]
    active = [rs for rs in all_rs if replicas_of(rs) > 0]
    if len(active) == 1:
        return active[0]
    if not active:
        if new_rs is not None:
            return new_rs
        return max(old_rs, key=creation_key) if old_rs else None
    return None


def proportional_sizes(deployment: Mapping[str, Any], new_rs: Mapping[str, Any] | None,
                       old_rs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Spread a scaling event over the active ReplicaSets in proportion to their size.

    Returns the new size of every active ReplicaSet (Kubernetes' DeploymentController.scale).
    """
    active = [rs for rs in [new_rs, *old_rs] if rs is not None and replicas_of(rs) > 0]
    desired = replicas_of(deployment)
    allowed = desired + max_surge(deployment) if desired > 0 else 0
    current = sum(replicas_of(rs) for rs in active)
    to_add = allowed - current
    if to_add > 0:  # grow the biggest (then newest) first
        ordered = sorted(active, key=lambda rs: (-replicas_of(rs), _negated_creation(rs)))
    else:  # shrink the biggest (then oldest) first
        ordered = sorted(active, key=lambda rs: (-replicas_of(rs), creation_key(rs)))
    sizes = {rs["metadata"]["name"]: replicas_of(rs) for rs in ordered}
    added = 0
    if to_add != 0:
        for rs in ordered:
            proportion = _proportion(rs, deployment, to_add, added)
            sizes[rs["metadata"]["name"]] += proportion
            added += proportion
        if ordered and added != to_add:
            first = ordered[0]["metadata"]["name"]
            sizes[first] = max(0, sizes[first] + to_add - added)
    return sizes


def _negated_creation(rs: Mapping[str, Any]) -> tuple:
    created = parse_time((rs.get("metadata") or {}).get("creationTimestamp"))
    return (-(created.timestamp() if created else 0.0), rs["metadata"]["name"])


def _proportion(rs: Mapping[str, Any], deployment: Mapping[str, Any], to_add: int, added: int) -> int:
    if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _fraction(rs, deployment)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _fraction(rs: Mapping[str, Any], deployment: Mapping[str, Any]) -> int:
    if replicas_of(deployment) == 0:
        return -replicas_of(rs)
    deployment_total = replicas_of(deployment) + max_surge(deployment)
    try:
        annotated = int(annotations_of(rs).get(MAX_REPLICAS, ""))
    except ValueError:
        annotated = status_count(deployment, "replicas")
    if annotated <= 0:
        annotated = max(status_count(deployment, "replicas"), 1)
    new_size = replicas_of(rs) * deployment_total / annotated
    return _round_half_away(new_size) - replicas_of(rs)


def _round_half_away(value: float) -> int:
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def replicas_annotations(deployment: Mapping[str, Any]) -> dict[str, str]:
    return {DESIRED_REPLICAS: str(replicas_of(deployment)),
            MAX_REPLICAS: str(replicas_of(deployment) + max_surge(deployment))}


# --- status -----------------------------------------------------------------------------------------


def calculate_status(deployment: Mapping[str, Any], new_rs: Mapping[str, Any] | None,
                     all_rs: Sequence[Mapping[str, Any]]) -> Object:
    """The Deployment status counts and the Available condition (conditions kept from the old status)."""
    old_status = deployment.get("status") or {}
    available = sum(status_count(rs, "availableReplicas") for rs in all_rs)
    total_spec = sum(replicas_of(rs) for rs in all_rs)
    status: Object = {
        "observedGeneration": int(deployment["metadata"].get("generation") or 0),
        "replicas": sum(status_count(rs, "replicas") for rs in all_rs),
        "updatedReplicas": status_count(new_rs, "replicas") if new_rs else 0,
        "readyReplicas": sum(status_count(rs, "readyReplicas") for rs in all_rs),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total_spec - available),
        "conditions": [dict(c) for c in old_status.get("conditions") or ()],
    }
    if old_status.get("collisionCount") is not None:
        status["collisionCount"] = old_status["collisionCount"]
    minimum = replicas_of(deployment) - max_unavailable(deployment)
    if available >= minimum:
        set_deployment_condition(status, "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.")
    else:
        set_deployment_condition(status, "Available", "False", MIN_UNAVAILABLE,
                                 "Deployment does not have minimum availability.")
    return status


def set_deployment_condition(status: Object, type_: str, value: str, reason: str, message: str,
                             at: dt.datetime | None = None) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason keeps both timestamps."""
    stamp = format_time(at)
    conditions = status.setdefault("conditions", [])
    for i, existing in enumerate(conditions):
        if existing.get("type") != type_:
            continue
        if existing.get("status") == value and existing.get("reason") == reason:
            existing["message"] = message
            return
        transition = existing.get("lastTransitionTime") if existing.get("status") == value else stamp
        conditions[i] = {"type": type_, "status": value, "lastUpdateTime": stamp,
                         "lastTransitionTime": transition or stamp, "reason": reason, "message": message}
        return
    conditions.append({"type": type_, "status": value, "lastUpdateTime": stamp,
                       "lastTransitionTime": stamp, "reason": reason, "message": message})


def is_complete(deployment: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    desired = replicas_of(deployment)
    return (int(status.get("updatedReplicas") or 0) == desired
            and int(status.get("replicas") or 0) == desired
            and int(status.get("availableReplicas") or 0) == desired
            and int(status.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0))


def is_progressing(deployment: Mapping[str, Any], new_status: Mapping[str, Any]) -> bool:
    old = deployment.get("status") or {}
    old_status_pods = int(old.get("replicas") or 0)
    new_status_pods = int(new_status.get("replicas") or 0)
    return (int(new_status.get("updatedReplicas") or 0) != int(old.get("updatedReplicas") or 0)
            or new_status_pods < old_status_pods
            or int(new_status.get("readyReplicas") or 0) > int(old.get("readyReplicas") or 0)
            or int(new_status.get("availableReplicas") or 0) > int(old.get("availableReplicas") or 0))


def has_timed_out(deployment: Mapping[str, Any], new_status: Mapping[str, Any],
                  at: dt.datetime) -> bool:
    deadline = deployment["spec"].get("progressDeadlineSeconds")
    if deadline is None:
        return False
    condition = get_condition(new_status, "Progressing")
    if condition is None:
        return False
    if condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    since = parse_time(condition.get("lastUpdateTime"))
    return since is not None and since + dt.timedelta(seconds=int(deadline)) < at


def seconds_until_deadline(deployment: Mapping[str, Any], status: Mapping[str, Any], at: dt.datetime) -> float | None:
    deadline = deployment["spec"].get("progressDeadlineSeconds")
    condition = get_condition(status, "Progressing")
    if deadline is None or condition is None or condition.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT):
        return None
    since = parse_time(condition.get("lastUpdateTime"))
    if since is None:
        return None
    return max(0.0, (since + dt.timedelta(seconds=int(deadline)) - at).total_seconds()) + 1.0
