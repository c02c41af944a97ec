"""DefaultPreemption: when nothing fits, make room by evicting lower-priority pods from one node.

Kubernetes' algorithm:
1. The pod must be eligible: `preemptionPolicy` is not Never, and it is not already waiting for a
   lower-priority pod terminating on its nominated node.
2. Only nodes that failed with a resolvable reason (Unschedulable, e.g. "Insufficient cpu") are
   tried; the others report "Preemption is not helpful for scheduling".
3. On each, all lower-priority pods are removed in a dry run; if the pod then fits, pods are added
   back one by one, most important first (PodDisruptionBudget-protected pods before the others),
   keeping each one that still leaves room. What cannot be added back are the victims.
4. The node chosen has the fewest PDB violations, then the lowest highest-victim priority, the
   lowest priority sum, the fewest victims, the latest start among its highest-priority victims.

This plugin only decides. The scheduler carries the decision out asynchronously: it sets the pod's
`status.nominatedNodeName` and deletes the victims gracefully (state key `DefaultPreemption`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pinnace.api.selectors import label_selector_from_dict
from pinnace.scheduler.framework import (
    Code,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    fit_error_message,
    unresolvable,
    unschedulable,
)

NAME = "DefaultPreemption"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100


@dataclass
class Candidate:
    node_name: str
    victims: list[PodInfo]
    pdb_violations: int


def pdb_matches(pdb: Mapping, pod: PodInfo) -> bool:
    meta = pdb.get("metadata") or {}
    if (meta.get("namespace") or "default") != pod.namespace:
        return False
    raw = (pdb.get("spec") or {}).get("selector")
    if not raw:
        return False  # a PDB with no or an empty selector protects nothing here, as in Kubernetes
    return label_selector_from_dict(raw).matches(pod.labels)


def split_by_pdb(pods: list[PodInfo], pdbs: list[Mapping]) -> tuple[list[PodInfo], list[PodInfo]]:
    """Pods whose eviction would violate a PDB, and the rest (Kubernetes' filterPodsWithPDBViolation)."""
    allowed = [int((p.get("status") or {}).get("disruptionsAllowed") or 0) for p in pdbs]
    violating, ok = [], []
    for pod in pods:
        violates = False
        for i, pdb in enumerate(pdbs):
            if not pdb_matches(pdb, pod):
                continue
            if pod.name in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                continue  # already being disrupted, it was counted
            allowed[i] -= 1
            if allowed[i] < 0:
                violates = True
        (violating if violates else ok).append(pod)
    return violating, ok


def eligible(pod: PodInfo, snapshot: Any) -> tuple[bool, str]:
    spec = pod.spec
    if spec.get("preemptionPolicy") == "Never":
        return False, "not eligible due to preemptionPolicy=Never."
    nominated = (pod.pod.get("status") or {}).get("nominatedNodeName")
    if nominated:
        node = snapshot.nodes.get(nominated)
        if node is not None and any(p.deleting and p.priority < pod.priority for p in node.pods.values()):
            return False, "not eligible due to a terminating pod on the nominated node."
    return True, ""


def pick_one(candidates: list[Candidate]) -> Candidate:
    def highest(c: Candidate) -> int:
        return max((v.priority for v in c.victims), default=-(1 << 31))

    def priority_sum(c: Candidate) -> int:
        # Offset by 2^31 so negative priorities still count as pods (Kubernetes does the same).
        return sum(v.priority + (1 << 31) for v in c.victims)

    def latest_start(c: Candidate) -> str:
        top = highest(c)
        starts = [v.start_time for v in c.victims if v.priority == top]
        return min(starts) if starts else ""

    best = min(candidates, key=lambda c: (c.pdb_violations, highest(c), priority_sum(c), len(c.victims)))
    ties = [c for c in candidates
            if (c.pdb_violations, highest(c), priority_sum(c), len(c.victims))
            == (best.pdb_violations, highest(best), priority_sum(best), len(best.victims))]
    if len(ties) == 1:
        return best
    return max(ties, key=latest_start)


class DefaultPreemption:
    name = NAME

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        args = args or {}
        self.handle = handle
        self.min_candidate_percentage = int(args.get("minCandidateNodesPercentage", MIN_CANDIDATE_NODES_PERCENTAGE))
        self.min_candidate_absolute = int(args.get("minCandidateNodesAbsolute", MIN_CANDIDATE_NODES_ABSOLUTE))
        self.framework: Any = None  # set by the runtime

    def post_filter(self, state: CycleState, pod: PodInfo, statuses: dict[str, Status]
                    ) -> tuple[str | None, Status | None]:
        snapshot = self.handle.snapshot
        ok, message = eligible(pod, snapshot)
        if not ok:
            return None, unschedulable(f"preemption: {message}")
        all_nodes = snapshot.node_list()
        node_statuses: dict[str, Status] = {}
        potential: list[NodeInfo] = []
        for node in all_nodes:
            status = statuses.get(node.name)
            if status is not None and status.code == Code.UNSCHEDULABLE:
                potential.append(node)
            else:
                node_statuses[node.name] = unresolvable(NOT_HELPFUL)
        wanted = max(len(potential) * self.min_candidate_percentage // 100, self.min_candidate_absolute)
        pdbs = list(self.handle.pod_disruption_budgets())
        candidates: list[Candidate] = []
        for node in potential:
            result = self.select_victims(state, pod, node, pdbs)
            if isinstance(result, Status):
                node_statuses[node.name] = result
                continue
            candidates.append(result)
            if len(candidates) >= wanted:
                break
        if not candidates:
            return None, unschedulable("preemption: " + fit_error_message(len(all_nodes), node_statuses))
        best = pick_one(candidates)
        state[NAME] = best
        return best.node_name, None

    def select_victims(self, state: CycleState, pod: PodInfo, node: NodeInfo, pdbs: list[Mapping]
                       ) -> Candidate | Status:
        framework = self.framework
        lower = [p for p in node.pods.values() if p.priority < pod.priority]
        if not lower:
            return unresolvable(NO_VICTIMS)
        trial_state = state.clone()
        trial_node = node.clone()
        for victim in lower:
            trial_node.remove_pod(victim.uid)
            framework.run_remove_pod(trial_state, pod, victim, trial_node)
        status = framework.run_filters_with_nominated(trial_state, pod, trial_node)
        if status is not None:
            return status
        # Most important first: higher priority, then the one running longer.
        lower.sort(key=lambda p: (-p.priority, p.start_time))
        violating, non_violating = split_by_pdb(lower, pdbs)
        victims: list[PodInfo] = []
        violations = 0

        def reprieve(p: PodInfo) -> bool:
            trial_node.add_pod(p)
            framework.run_add_pod(trial_state, pod, p, trial_node)
            if framework.run_filters_with_nominated(trial_state, pod, trial_node) is None:
                return True
            trial_node.remove_pod(p.uid)
            framework.run_remove_pod(trial_state, pod, p, trial_node)
            victims.append(p)
            return False

        for p in violating:
            if not reprieve(p):
                violations += 1
        for p in non_violating:
            reprieve(p)
        victims.sort(key=lambda p: (-p.priority, p.start_time))
        return Candidate(node.name, victims, violations)
