"""Deleting a CustomResourceDefinition deletes its custom objects first, as kube-apiserver does.

Every CRD carries the `customresourcecleanup.apiextensions.k8s.io` finalizer. When a CRD is deleted
it goes Terminating (a `Terminating` condition, `deletionTimestamp` set) and stays served, so that
controllers can still remove the finalizers of their objects; its objects are deleted through the
ordinary delete path (their own finalizers are honoured), and once none is left the finalizer goes
and the CRD with it. So `kubectl delete crd` returns when the objects are gone, and a CRD created
again under the same name never sees objects of the old one.

The controller follows CRDs through the server's watch cache and reconciles one CRD at a time by
name (level-triggered: it reads the CRD again, so reconciling twice changes nothing). It runs as one
task of the server; `run()` ends when the server cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pinnace.api.meta import now_rfc3339
from pinnace.apiserver.errors import ApiError, Conflict, NotFound
from pinnace.apiserver.registry import object_of
from pinnace.apiserver.watchcache import CachedEvent
from pinnace.store.base import StoreError

if TYPE_CHECKING:
    from pinnace.api.kinds import ResourceInfo
    from pinnace.apiserver.server import ApiServer

log = logging.getLogger(__name__)

FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
RETRY_SECONDS = 0.5  # objects held by their own finalizers: look again this often


class CustomResourceCleanup:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()  # CRD names; None: reconcile all

    async def run(self) -> None:
        info = self.server.kinds.by_resource(CRDS)
        cache = self.server.watch_cache(info)
        cache.add_listener(self._on_event, lambda: self.queue.put_nowait(None))
        await cache.start()
        self.queue.put_nowait(None)  # the CRDs that exist already (a restart in the middle of a deletion)
        while True:
            name = await self.queue.get()
            try:
                names = [name] if name is not None else await self._all_names(info)
            except (ApiError, StoreError) as error:
                log.warning("listing CRDs: %s; retrying", error)
                self._later(None)
                continue
            for each in names:
                try:
                    await self.reconcile(info, each)
                except (ApiError, StoreError) as error:
                    log.warning("cleaning up CRD %s: %s; retrying", each, error)
                    self._later(each)
                except Exception:
                    # A bug must not end the controller (nor the server's shutdown, which awaits it).
                    log.exception("cleaning up CRD %s failed; retrying", each)
                    self._later(each)

    def _on_event(self, event: CachedEvent) -> None:
        if event.type != "DELETED":
            self.queue.put_nowait(event.key.rsplit("/", 1)[-1])

    def _later(self, name: str | None) -> None:
        asyncio.get_running_loop().call_later(RETRY_SECONDS, self.queue.put_nowait, name)

    async def _all_names(self, info: ResourceInfo) -> list[str]:
        page = await self.server.registry.list_page(info, None, revision=None, limit=0, continue_token=None)
        return [crd["metadata"]["name"] for crd in page.items]

    async def reconcile(self, info: ResourceInfo, name: str) -> None:
        registry = self.server.registry
        try:
            kv = await registry.get_kv(info, None, name)
        except NotFound:
            return
        crd = object_of(kv, info)
        meta = crd["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        if not meta.get("deletionTimestamp"):
            if FINALIZER not in finalizers:
                meta["finalizers"] = [*finalizers, FINALIZER]
                with contextlib.suppress(Conflict, NotFound):  # changed meanwhile: its event brings us back
                    await registry.update(info, None, name, crd, current=kv)
            return
        if FINALIZER not in finalizers:
            return  # ours is done; other finalizers are their owners' business
        if not _terminating(crd):
            _set_terminating(crd)
            with contextlib.suppress(Conflict):  # the condition is informative: another pass sets it
                await registry.write_raw(info, crd, kv.mod_revision)
        if await self._delete_objects(crd):
            self._later(name)  # some objects wait for their finalizers
            return
        crd = object_of(await registry.get_kv(info, None, name), info)
        crd["metadata"]["finalizers"] = [f for f in crd["metadata"].get("finalizers") or () if f != FINALIZER]
        try:
            await registry.update(info, None, name, crd)  # the last finalizer gone: the CRD goes too
        except Conflict:
            self._later(name)

    async def _delete_objects(self, crd: dict) -> int:
        """Delete every object of the CRD's kind; returns how many are still there."""
        custom_info = self._served_info(crd)
        if custom_info is None:
            return 0  # not served (names not accepted): nothing was ever stored under it
        registry = self.server.registry
        page = await registry.list_page(custom_info, None, revision=None, limit=0, continue_token=None)
        remaining = 0
        for obj in page.items:
            meta = obj["metadata"]
            with contextlib.suppress(NotFound):
                _obj, gone = await registry.delete(custom_info, meta.get("namespace"), meta["name"], {})
                remaining += not gone
        return remaining

    def _served_info(self, crd: dict) -> ResourceInfo | None:
        custom = self.server.custom
        if custom is None:
            return None
        spec = crd.get("spec") or {}
        plural = (spec.get("names") or {}).get("plural", "")
        for version in spec.get("versions") or ():
            info = custom.lookup(spec.get("group", ""), version.get("name", ""), plural)
            if info is not None:
                return info
        return None


def _terminating(crd: dict) -> bool:
    return any(c.get("type") == "Terminating" for c in (crd.get("status") or {}).get("conditions") or ())


def _set_terminating(crd: dict) -> None:
    status = crd.setdefault("status", {})
    status["conditions"] = [
        *(c for c in status.get("conditions") or () if c.get("type") != "Terminating"),
        {
            "type": "Terminating",
            "status": "True",
            "lastTransitionTime": now_rfc3339(),
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
        },
    ]
