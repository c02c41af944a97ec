"""TaintToleration: a pod goes only where it tolerates every NoSchedule and NoExecute taint, and
prefers nodes with fewer PreferNoSchedule taints it does not tolerate.

Matching follows Kubernetes' Toleration.ToleratesTaint: an empty effect matches every effect, an
empty key with `Exists` matches every taint, `Exists` ignores the value, `Equal` (the default)
compares it. The message names the first untolerated taint, `{key: value}`, as Kubernetes does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pinnace.scheduler.framework import (
    SKIP,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    default_normalize_score,
    unresolvable,
)

NAME = "TaintToleration"


def toleration_matches(toleration: Mapping, taint: Mapping) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key:
        if key != taint.get("key"):
            return False
    elif operator != "Exists":
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: Sequence[Mapping], taint: Mapping) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


def first_untolerated(taints: Sequence[Mapping], tolerations: Sequence[Mapping]) -> Mapping | None:
    for taint in taints:
        if not tolerates(tolerations, taint):
            return taint
    return None


class TaintToleration:
    name = NAME
    events = ("Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        self.handle = handle

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        if self.handle is not None and self.handle.snapshot.tainted_nodes == 0:
            return SKIP
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.schedule_taints:
            return None
        taint = first_untolerated(node.schedule_taints, pod.tolerations)
        if taint is None:
            return None
        return unresolvable(f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}")

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None]:
        return [self.filter(state, pod, n) if n.schedule_taints else None for n in nodes]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if (self.handle.snapshot.prefer_no_schedule_nodes == 0 if self.handle is not None
                else not any(n.prefer_no_schedule_taints for n in nodes)):
            return SKIP  # every node would score the same
        state[NAME] = [t for t in pod.tolerations if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"]
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        tolerations = state.get(NAME, pod.tolerations)
        return sum(1 for taint in node.prefer_no_schedule_taints if not tolerates(tolerations, taint))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores, reverse=True)
