"""Expectations: the creations and deletions a controller has asked for but not yet seen in its cache.

Informer caches lag behind the writes a controller makes. Without expectations, a ReplicaSet that just
created 10 pods would see 0 in its cache on the next reconcile and create 10 more. A controller records
what it expects before writing, the pod informer's handlers lower the counts as events arrive, and
reconcile only acts on its pods once the expectations are satisfied (or have expired, because a watch
event can be lost). This is the only state controllers keep that the cluster does not hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Kubernetes' ExpectationsTimeout: after this, act anyway (an event was probably missed).
EXPECTATIONS_TIMEOUT = 300.0


@dataclass
class _Expected:
    adds: int = 0
    deletes: int = 0
    deleting: set[str] = field(default_factory=set)  # uids we asked to delete
    stamp: float = field(default_factory=time.monotonic)


class Expectations:
    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT) -> None:
        self._by_key: dict[str, _Expected] = {}
        self.timeout = timeout

    def satisfied(self, key: str) -> bool:
        expected = self._by_key.get(key)
        if expected is None:
            return True
        if expected.adds <= 0 and expected.deletes <= 0:
            return True
        return time.monotonic() - expected.stamp > self.timeout

    def expect_creations(self, key: str, count: int) -> None:
        expected = self._by_key.setdefault(key, _Expected())
        expected.adds = max(expected.adds, 0) + count
        expected.stamp = time.monotonic()

    def expect_deletions(self, key: str, uids: list[str]) -> None:
        expected = self._by_key.setdefault(key, _Expected())
        expected.deletes = max(expected.deletes, 0) + len(uids)
        expected.deleting.update(uids)
        expected.stamp = time.monotonic()

    def creation_observed(self, key: str, count: int = 1) -> None:
        expected = self._by_key.get(key)
        if expected is not None and expected.adds > 0:
            expected.adds -= count

    def deletion_observed(self, key: str, uid: str) -> None:
        expected = self._by_key.get(key)
        if expected is not None and uid in expected.deleting:
            expected.deleting.discard(uid)
            expected.deletes -= 1

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
