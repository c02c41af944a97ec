"""Garbage collector: delete dependents whose owners are gone; honour Foreground and Orphan deletion.

The ownerReferences graph is read from informers on every deletable resource (custom resources too, as
their CRDs appear), each indexed by the uids its objects name as owners, plus a uid -> object map. Work
items are `"<resource>|<key>"` strings. For one item (Kubernetes' attemptToDeleteItem):
- Being deleted with the `orphan` finalizer (propagationPolicy Orphan; the API server adds it): remove
  the owner reference from every dependent, then the finalizer.
- Being deleted with the `foregroundDeletion` finalizer (Foreground): delete the dependents; remove the
  finalizer once no dependent with `blockOwnerDeletion` is left, so the owner goes last.
- Otherwise its owners are sorted into solid (exist), dangling (absent, or present with another uid: a
  different object of the same name) and waiting (being deleted in the foreground). Any solid owner
  keeps the item, which only loses its references to dangling and waiting owners. Without one, the item
  is deleted: in the foreground when it waits for an owner and has dependents of its own, else in the
  background. An owner missing from the caches is looked up on the server before it is called dangling,
  because another informer may simply not have caught up.
- Cycles: an item whose dependent is itself waiting for its dependents stops blocking its owners (its
  references get `blockOwnerDeletion: false`), so a ring of foreground deletions cannot wait forever.
Background deletion needs no finalizer: the owner goes at once and its dependents are found dangling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pinnace.api.kinds import registry
from pinnace.client import ApiError, Conflict, NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import (
    Object,
    is_being_deleted,
    key_of,
    name_of,
    namespace_of,
    split_key,
    uid_of,
)

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# Kubernetes' GC ignores events; leases of nodes do carry owner references and stay in.
IGNORED = {"v1/events", "events.k8s.io/v1/events", "v1/componentstatuses", "v1/bindings"}


def default_resources() -> list[str]:
    return [r.name for r in registry().resources
            if {"list", "watch", "delete"} <= set(r.verbs) and r.name not in IGNORED]


def _owner_uids(obj: Mapping[str, Any]) -> list[str]:
    return [r["uid"] for r in (obj.get("metadata") or {}).get("ownerReferences") or () if r.get("uid")]


def _refs(obj: Mapping[str, Any]) -> list[Object]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or ())


def _finalizers(obj: Mapping[str, Any]) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or ())


class GarbageCollector(BaseController):
    name = "garbagecollector"
    sync_timeout = 30.0  # a resource the server does not serve must not hold the collector back forever

    def setup(self) -> None:
        self.monitors: dict[str, Any] = {}
        self.uids: dict[str, tuple[str, str]] = {}  # uid -> (resource, key)
        for resource in self.config.gc_resources or default_resources():
            self.monitor(resource)
        if self.config.gc_resources is None:
            crds = self.informer("apiextensions.k8s.io/v1/customresourcedefinitions")
            crds.add_handler(on_add=self._crd_event, on_update=lambda old, new: self._crd_event(new))

    def _crd_event(self, crd: Object) -> None:
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or ():
            if version.get("served"):
                self.monitor(f"{spec.get('group')}/{version.get('name')}/{(spec.get('names') or {}).get('plural')}")
                break

    def monitor(self, resource: str) -> None:
        if resource in self.monitors:
            return
        informer = self.informer(resource)
        informer.add_index("gc-owners", _owner_uids)
        self.monitors[resource] = informer
        informer.add_handler(
            on_add=lambda obj, r=resource: self._added(r, obj),
            on_update=lambda old, new, r=resource: self._updated(r, old, new),
            on_delete=lambda obj, r=resource: self._deleted(r, obj),
        )

    # --- graph maintenance ----------------------------------------------------------------------------

    def _item(self, resource: str, obj: Mapping[str, Any]) -> str:
        return f"{resource}|{key_of(obj)}"

    def _added(self, resource: str, obj: Object) -> None:
        self.uids[uid_of(obj)] = (resource, key_of(obj))
        if _refs(obj) or (is_being_deleted(obj) and {FOREGROUND, ORPHAN} & set(_finalizers(obj))):
            self.enqueue(self._item(resource, obj))

    def _updated(self, resource: str, old: Object, new: Object) -> None:
        self.uids[uid_of(new)] = (resource, key_of(new))
        changed_refs = _refs(old) != _refs(new)
        deleting = is_being_deleted(new) and bool({FOREGROUND, ORPHAN} & set(_finalizers(new)))
        if changed_refs or deleting:
            self.enqueue(self._item(resource, new))
        if changed_refs or is_being_deleted(new) != is_being_deleted(old):
            self._enqueue_waiting_owners(old)
            # An owner reference dropped by someone else makes that owner re-check its dependents.

    def _deleted(self, resource: str, obj: Object) -> None:
        self.uids.pop(uid_of(obj), None)
        for dependent_resource, dependent in self.dependents(uid_of(obj)):
            self.enqueue(self._item(dependent_resource, dependent))
        self._enqueue_waiting_owners(obj)

    def _enqueue_waiting_owners(self, obj: Mapping[str, Any]) -> None:
        for uid in _owner_uids(obj):
            owner = self.lookup(uid)
            if owner is not None and FOREGROUND in _finalizers(owner[1]):
                self.enqueue(self._item(owner[0], owner[1]))

    def lookup(self, uid: str) -> tuple[str, Object] | None:
        where = self.uids.get(uid)
        if where is None:
            return None
        obj = self.monitors[where[0]].get(where[1])
        return (where[0], obj) if obj is not None and uid_of(obj) == uid else None

    def dependents(self, uid: str) -> list[tuple[str, Object]]:
        return [(resource, obj) for resource, informer in self.monitors.items()
                for obj in informer.by_index("gc-owners", uid)]

    # --- reconcile ------------------------------------------------------------------------------------

    async def reconcile(self, item: str) -> None:
        resource, _, key = item.partition("|")
        informer = self.monitors.get(resource)
        obj = informer.get(key) if informer is not None else None
        if obj is None:
            return
        if is_being_deleted(obj):
            if ORPHAN in _finalizers(obj):
                await self.orphan_dependents(resource, obj)
            elif FOREGROUND in _finalizers(obj):
                await self.delete_dependents_first(resource, obj)
            return
        refs = _refs(obj)
        if not refs:
            return
        solid, dangling, waiting = [], [], []
        for ref in refs:
            state = await self.owner_state(obj, ref)
            {"solid": solid, "dangling": dangling, "waiting": waiting}[state].append(ref)
        if solid:
            gone = {r["uid"] for r in dangling + waiting}
            if gone:
                await self._set_refs(resource, obj, [r for r in refs if r["uid"] not in gone])
            return
        own_dependents = self.dependents(uid_of(obj))
        if waiting and own_dependents:
            if any(FOREGROUND in _finalizers(d) and is_being_deleted(d) for _, d in own_dependents):
                # A cycle (or a chain still draining): stop blocking the waiting owners.
                unblocked = [{**r, "blockOwnerDeletion": False} if r in waiting else r for r in refs]
                if unblocked != refs:
                    await self._set_refs(resource, obj, unblocked)
            await self._delete(resource, obj, "Foreground")
            return
        policy = "Orphan" if ORPHAN in _finalizers(obj) else "Foreground" if FOREGROUND in _finalizers(obj) else "Background"
        await self._delete(resource, obj, policy)

    async def owner_state(self, obj: Object, ref: Mapping[str, Any]) -> str:
        found = self.lookup(ref["uid"])
        owner = found[1] if found else None
        if owner is None:
            owner = await self._get_live_owner(obj, ref)
            if owner is None:
                return "dangling"
        if uid_of(owner) != ref["uid"]:
            return "dangling"
        if is_being_deleted(owner) and FOREGROUND in _finalizers(owner):
            return "waiting"
        return "solid"

    async def _get_live_owner(self, obj: Object, ref: Mapping[str, Any]) -> Object | None:
        try:
            resource = await self.client.resource_for(ref["apiVersion"], ref["kind"])
        except NotFound:
            # No such kind is served. Kubernetes keeps such dependents (the kind may come back); so do we.
            return {"metadata": {"uid": ref["uid"]}}
        namespaced = await self.client.is_namespaced(resource)
        try:
            return await self.client.get(resource, ref["name"], namespace=namespace_of(obj) if namespaced else None)
        except NotFound:
            return None

    async def orphan_dependents(self, resource: str, owner: Object) -> None:
        uid = uid_of(owner)
        for dependent_resource, dependent in self.dependents(uid):
            await self._set_refs(dependent_resource, dependent, [r for r in _refs(dependent) if r.get("uid") != uid])
        await self._remove_finalizer(resource, owner, ORPHAN)

    async def delete_dependents_first(self, resource: str, owner: Object) -> None:
        uid = uid_of(owner)
        blocking = 0
        for dependent_resource, dependent in self.dependents(uid):
            ref = next((r for r in _refs(dependent) if r.get("uid") == uid), {})
            if ref.get("blockOwnerDeletion"):
                blocking += 1
            if not is_being_deleted(dependent):
                # The dependent sees its owner waiting and decides how it goes (see reconcile).
                self.enqueue(self._item(dependent_resource, dependent))
        if blocking == 0:
            await self._remove_finalizer(resource, owner, FOREGROUND)

    # --- writes ---------------------------------------------------------------------------------------

    async def _set_refs(self, resource: str, obj: Object, refs: list[Object]) -> None:
        patch = {"metadata": {"ownerReferences": refs or None, "uid": uid_of(obj),
                              "resourceVersion": obj["metadata"].get("resourceVersion")}}
        namespace, name = split_key(key_of(obj))
        try:
            await self.client.patch(resource, name, patch, namespace=namespace, patch_type="merge")
        except NotFound:
            pass

    async def _remove_finalizer(self, resource: str, obj: Object, finalizer: str) -> None:
        remaining = [f for f in _finalizers(obj) if f != finalizer]
        patch = {"metadata": {"finalizers": remaining or None,
                              "resourceVersion": obj["metadata"].get("resourceVersion")}}
        try:
            await self.client.patch(resource, name_of(obj), patch, namespace=namespace_of(obj), patch_type="merge")
        except NotFound:
            pass

    async def _delete(self, resource: str, obj: Object, policy: str) -> None:
        try:
            await self.client.delete(resource, name_of(obj), namespace=namespace_of(obj), propagation_policy=policy,
                                     preconditions={"uid": uid_of(obj)})
        except (NotFound, Conflict):
            pass
        except ApiError as error:
            if error.code == 405:  # a kind that cannot be deleted: nothing to collect
                return
            raise
