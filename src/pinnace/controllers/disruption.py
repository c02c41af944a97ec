"""PodDisruptionBudget status: how many pods may be disrupted right now (what eviction checks).

expectedPods is the number of pods the budget selects (Kubernetes asks their controllers' scale; pinnace
counts the selected, not finished pods, which is the same in a steady state). currentHealthy counts the
ready ones. desiredHealthy is `minAvailable` (a number, or a percentage of expectedPods rounded up), or
expectedPods minus `maxUnavailable` (rounded up); disruptionsAllowed is what exceeds it. The
DisruptionAllowed condition says whether an eviction would pass.
"""

from __future__ import annotations

import copy

from pinnace.client import NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    format_time,
    generation_of,
    is_being_deleted,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    scaled_value,
    selector_is_empty,
    selector_matches,
    set_condition,
    status_equal,
)
from pinnace.controllers.pods import is_active, is_ready


class DisruptionController(BaseController):
    name = "disruption"

    def setup(self) -> None:
        self.budgets = self.informer("policy/v1/poddisruptionbudgets")
        self.pods = self.pod_informer()
        self.budgets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.pods.add_handler(on_add=self._pod_event, on_update=lambda old, new: self._pod_event(new),
                              on_delete=self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        for budget in self.budgets.by_index("namespace", namespace_of(pod) or ""):
            selector = budget["spec"].get("selector")
            if not selector_is_empty(selector) and selector_matches(selector, labels_of(pod)):
                self.enqueue(key_of(budget))

    async def reconcile(self, key: str) -> None:
        cached = self.budgets.get(key)
        if cached is None or is_being_deleted(cached):
            return
        budget = copy.deepcopy(cached)
        spec = budget["spec"]
        selector = spec.get("selector")
        pods = [] if selector_is_empty(selector) else [
            p for p in self.pods.by_index("namespace", namespace_of(budget) or "")
            if is_active(p) and selector_matches(selector, labels_of(p))]
        expected = len(pods)
        healthy = sum(1 for p in pods if is_ready(p))
        if spec.get("minAvailable") is not None:
            desired = scaled_value(spec["minAvailable"], expected, round_up=True)
        elif spec.get("maxUnavailable") is not None:
            desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected, round_up=True))
        else:
            desired = expected  # nothing may be disrupted without a rule
        allowed = max(0, healthy - desired)
        status = copy.deepcopy(budget.get("status") or {})
        status.update({"observedGeneration": generation_of(budget), "expectedPods": expected,
                       "currentHealthy": healthy, "desiredHealthy": desired, "disruptionsAllowed": allowed})
        status.setdefault("disruptedPods", None)
        set_condition(status, {"type": "DisruptionAllowed", "status": "True" if allowed > 0 else "False",
                               "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                               "message": "", "observedGeneration": generation_of(budget),
                               "lastTransitionTime": format_time()})
        if status_equal(status, budget.get("status")):
            return
        try:
            await self.client.patch("policy/v1/poddisruptionbudgets", name_of(budget), {"status": status},
                                    namespace=namespace_of(budget), patch_type="merge", subresource="status")
        except NotFound:
            pass
