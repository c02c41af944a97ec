"""NodeAffinity: required node affinity and nodeSelector filter, preferred node affinity scores.

Same semantics as Kubernetes: `spec.nodeSelector` and the required terms must both hold; terms are
ORed, the expressions and fields inside a term are ANDed; a term with neither matches nothing.
Operators In, NotIn, Exists, DoesNotExist, Gt, Lt (integers) on labels; In/NotIn on the field
`metadata.name`. Preferred terms add their weight when they match; scores are scaled so the best
node gets 100. A required term pinning `metadata.name` narrows the search in PreFilter.
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

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def requirement_matches(expr: Mapping, values_by_key: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator", "")
    values = expr.get("values") or ()
    present = key in values_by_key
    if op == "In":
        return present and values_by_key[key] in values
    if op == "NotIn":
        return not present or values_by_key[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        have, bound = _int(values_by_key[key]), _int(values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def term_matches(term: Mapping, labels: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    expressions = term.get("matchExpressions") or ()
    match_fields = term.get("matchFields") or ()
    if not expressions and not match_fields:
        return False
    return (all(requirement_matches(e, labels) for e in expressions)
            and all(requirement_matches(f, fields) for f in match_fields))


def required_terms(pod: Mapping) -> Sequence[Mapping] | None:
    """The required nodeSelectorTerms, or None when the pod has no required node affinity."""
    node_affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    return required.get("nodeSelectorTerms") or ()


def preferred_terms(pod: Mapping) -> Sequence[Mapping]:
    node_affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    return node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ()


def matches_required(pod: Mapping, labels: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    """nodeSelector and required node affinity, as every plugin that honours them must check."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    for key, value in selector.items():
        if labels.get(key) != value:
            return False
    terms = required_terms(pod)
    if terms is None:
        return True
    return any(term_matches(t, labels, fields) for t in terms)


def has_required(pod: Mapping) -> bool:
    return bool((pod.get("spec") or {}).get("nodeSelector")) or required_terms(pod) is not None


def _pinned_names(terms: Sequence[Mapping]) -> set[str] | None:
    """Node names every matching node must have, when each term pins metadata.name with In."""
    names: set[str] = set()
    for term in terms:
        pinned = None
        for f in term.get("matchFields") or ():
            if f.get("key") == "metadata.name" and f.get("operator") == "In":
                values = set(f.get("values") or ())
                pinned = values if pinned is None else pinned & values
        if pinned is None:
            return None
        names |= pinned
    return names


class NodeAffinity:
    name = NAME
    events = ("Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | set[str] | None:
        if not has_required(pod.pod):
            return SKIP
        terms = required_terms(pod.pod)
        if terms is not None:
            if not terms:
                return unresolvable(REASON)
            names = _pinned_names(terms)
            if names is not None:
                return names
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not matches_required(pod.pod, node.labels, node.fields):
            return unresolvable(REASON)
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        terms = preferred_terms(pod.pod)
        if not terms:
            return SKIP
        state[NAME] = terms
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        terms = state.get(NAME)
        if terms is None:
            terms = preferred_terms(pod.pod)
        return sum(int(t.get("weight") or 0) for t in terms
                   if term_matches(t.get("preference") or {}, node.labels, node.fields))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores)
