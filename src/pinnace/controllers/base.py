"""What every pinnace controller adds to `pinnace.client.Controller`: shared informer indexes, delayed
requeues, events, and claiming dependents (adopt matching orphans, release strays), all in one place.

Informers come from one shared InformerFactory, so several controllers ask for the same pod informer;
`indexed_informer` adds each index only once per informer.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pinnace.client import ApiError, Controller, Forbidden, NotFound
from pinnace.controllers.objects import (
    Object,
    controller_ref,
    is_being_deleted,
    key_of,
    labels_of,
    namespace_of,
    owner_reference,
    selector_is_empty,
    selector_matches,
    uid_of,
)

log = logging.getLogger(__name__)


@dataclass
class ControllerConfig:
    """Knobs the manager passes to every controller; the defaults are Kubernetes'."""

    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 40.0  # a Lease older than this makes the node Ready=Unknown
    default_toleration_seconds: int = 300  # not-ready/unreachable NoExecute, when the pod says nothing
    cluster_cidr: str = "10.42.0.0/16"
    node_cidr_mask_size: int = 24
    root_ca: str | None = None  # PEM for kube-root-ca.crt; default: the client's CA file
    job_backoff_base: float = 10.0  # seconds before re-creating a failed Job pod, doubled each time
    job_backoff_max: float = 360.0
    gc_resources: tuple[str, ...] | None = None  # resources the GC watches; None: every deletable one
    # HorizontalPodAutoscaler (kube-controller-manager's --horizontal-pod-autoscaler-* flags)
    horizontal_pod_autoscaler_sync_period: float = 15.0
    horizontal_pod_autoscaler_tolerance: float = 0.1
    horizontal_pod_autoscaler_downscale_stabilization: float = 300.0
    horizontal_pod_autoscaler_cpu_initialization_period: float = 300.0
    horizontal_pod_autoscaler_initial_readiness_delay: float = 30.0
    workers: int = 2


_indexes: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _owner_index(obj: Mapping[str, Any]) -> list[str]:
    ref = controller_ref(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def _node_index(obj: Mapping[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def add_index(informer: Any, name: str, function: Callable[[Mapping[str, Any]], list[str]]) -> Any:
    seen = _indexes.setdefault(informer, set())
    if name not in seen:
        informer.add_index(name, function)
        seen.add(name)
    return informer


def namespace_terminating(error: BaseException) -> bool:
    """A create refused because the namespace is going away: expected, and nothing to retry."""
    return isinstance(error, Forbidden) and "being terminated" in str(error)


# client-go's EventSourceObjectSpamFilter: per object and reason, a burst of 25 events, then one per
# 5 minutes. Scaling a ReplicaSet to 1,000 records 25 "SuccessfulCreate" events, not 1,000 writes.
EVENT_BURST = 25
EVENT_REFILL_SECONDS = 300.0
_event_buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()


def _event_allowed(obj: Mapping[str, Any], reason: str) -> bool:
    key = ((obj.get("metadata") or {}).get("uid") or key_of(obj), reason)
    now = time.monotonic()
    tokens, stamp = _event_buckets.pop(key, (float(EVENT_BURST), now))
    tokens = min(float(EVENT_BURST), tokens + (now - stamp) / EVENT_REFILL_SECONDS)
    allowed = tokens >= 1.0
    _event_buckets[key] = (tokens - 1.0 if allowed else tokens, now)
    while len(_event_buckets) > 4096:
        _event_buckets.popitem(last=False)
    return allowed


def api_group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class BaseController(Controller):
    """A Controller with the helpers pinnace's controllers share."""

    config: ControllerConfig

    def __init__(self, client: Any, factory: Any, recorder: Any = None, workers: int = 2,
                 config: ControllerConfig | None = None) -> None:
        self.config = config or ControllerConfig()
        super().__init__(client, factory, recorder=recorder, workers=workers)

    def indexed_informer(self, resource: str) -> Any:
        """The shared informer for `resource`, with `namespace` and `owner` (controller uid) indexes."""
        informer = self.informer(resource)
        add_index(informer, "owner", _owner_index)
        return informer

    def pod_informer(self) -> Any:
        informer = self.indexed_informer("v1/pods")
        add_index(informer, "node", _node_index)
        return informer

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event about `obj`, unless this object has had its share lately (Kubernetes' spam filter)."""
        if self.recorder is not None and _event_allowed(obj, reason):
            self.recorder.event(obj, type_, reason, message)

    async def claim(self, owner: Object, candidates: Iterable[Object], resource: str,
                    selector: Mapping[str, Any] | None) -> list[Object]:
        """The objects `owner` controls, after adopting matching orphans and releasing strays.

        Kubernetes' ControllerRefManager: an owned object whose labels stop matching is released (its
        owner reference removed) so that another controller may adopt it; an orphan that matches is
        adopted, unless it or the owner is being deleted.
        """
        owned: list[Object] = []
        uid = uid_of(owner)
        for obj in candidates:
            ref = controller_ref(obj)
            matches = not selector_is_empty(selector) and selector_matches(selector, labels_of(obj))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches or is_being_deleted(obj):
                    owned.append(obj)
                elif not is_being_deleted(owner):
                    await self._release(owner, obj, resource)
            elif matches and not is_being_deleted(owner) and not is_being_deleted(obj):
                adopted = await self._adopt(owner, obj, resource)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _adopt(self, owner: Object, obj: Object, resource: str) -> Object | None:
        refs = [*(obj["metadata"].get("ownerReferences") or []), owner_reference(owner)]
        # resourceVersion makes this a compare-and-swap: two controllers cannot both adopt.
        patch = {"metadata": {"ownerReferences": refs, "resourceVersion": obj["metadata"].get("resourceVersion")}}
        try:
            return await self.client.patch(resource, obj["metadata"]["name"], patch, namespace=namespace_of(obj),
                                           patch_type="merge")
        except ApiError as error:
            log.debug("adopting %s %s failed: %s", resource, key_of(obj), error)  # the next pass re-reads
            return None

    async def _release(self, owner: Object, obj: Object, resource: str) -> None:
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid_of(owner)]
        patch = {"metadata": {"ownerReferences": refs or None,
                              "resourceVersion": obj["metadata"].get("resourceVersion")}}
        try:
            await self.client.patch(resource, obj["metadata"]["name"], patch, namespace=namespace_of(obj),
                                    patch_type="merge")
        except NotFound:
            pass
        except ApiError as error:
            log.debug("releasing %s %s failed: %s", resource, key_of(obj), error)

    def owner_key(self, obj: Mapping[str, Any], kind: str, api_group_name: str) -> str | None:
        """`namespace/name` of obj's controller when it is of `kind` in `api_group_name`, else None."""
        ref = controller_ref(obj)
        if ref is None or ref.get("kind") != kind or api_group(ref.get("apiVersion", "")) != api_group_name:
            return None
        namespace = namespace_of(obj)
        return f"{namespace}/{ref['name']}" if namespace else ref["name"]
