"""Serving the kinds that CustomResourceDefinitions declare.

The server follows CRDs through their watch cache, as kube-apiserver's apiextensions controllers do:
- a CRD whose names are acceptable is served at once (every served version, at
  `/apis/<group>/<version>/...`), appears in discovery and OpenAPI, and gets the `NamesAccepted` and
  `Established` conditions (`kubectl wait --for condition=established` works);
- custom objects are pruned to their structural schema (unknown fields follow `fieldValidation`),
  defaulted from it and validated against it (422 with causes); `status` and `scale` subresources
  follow the CRD; Tables use `additionalPrinterColumns`;
- all versions share one storage prefix (conversion strategy None: only `apiVersion` changes);
- deleting a CRD deletes its custom objects first (pinnace.apiserver.crdcleanup).
The pure parts (schemas, pruning, defaults, validation, printer columns) are pinnace.api.crd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pinnace.api import crd as crds
from pinnace.api.kinds import ResourceInfo
from pinnace.apiserver.errors import Conflict, NotFound
from pinnace.apiserver.registry import object_of
from pinnace.apiserver.strategies import Strategy
from pinnace.apiserver.watchcache import CachedEvent
from pinnace.store.base import StoreError

if TYPE_CHECKING:
    from pinnace.apiserver.server import ApiServer

log = logging.getLogger(__name__)


class CustomStrategy(Strategy):
    """A custom kind: schema defaults on every write; status belongs to the status subresource."""

    def __init__(self, info: ResourceInfo, schema: dict) -> None:
        super().__init__(
            resource=info.name, kind=info.kind, group=info.group, plural=info.plural,
            has_status="status" in info.subresources,
        )
        self.schema = schema

    def prepare_create(self, obj: dict) -> None:
        if self.has_status:
            obj.pop("status", None)
        crds.apply_defaults(obj, self.schema)

    def prepare_update(self, new: dict, old: dict) -> None:
        if self.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        crds.apply_defaults(new, self.schema)

    def validate(self, obj: dict, old: dict | None) -> list[dict]:
        return crds.validate(obj, self.schema)


class CustomResources:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.crds: dict[str, dict] = {}  # CRD name -> the CRD
        self.served: dict[tuple[str, str, str], tuple[ResourceInfo, dict]] = {}  # (group, version, plural)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lookups used by the server ----

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        found = self.served.get((group, version, plural))
        return found[0] if found is not None else None

    def crd_of(self, info: ResourceInfo) -> dict | None:
        found = self.served.get((info.group, info.version, info.plural))
        return found[1] if found is not None else None

    def is_custom(self, info: ResourceInfo) -> bool:
        return (info.group, info.version, info.plural) in self.served

    def is_terminating(self, info: ResourceInfo) -> bool:
        """The CRD serving `info` is being deleted (its `deletionTimestamp` or `Terminating` condition)."""
        crd = self.crd_of(info)
        if crd is None:
            return False
        if crd["metadata"].get("deletionTimestamp"):
            return True
        return any(c.get("type") == "Terminating" and c.get("status") == "True"
                   for c in (crd.get("status") or {}).get("conditions") or ())

    def infos(self) -> list[ResourceInfo]:
        return [info for info, _crd in self.served.values()]

    def schema_node(self, info: ResourceInfo) -> Any:
        crd = self.crd_of(info)
        return crds.schema_node(crd, info.version) if crd is not None else None

    def schema(self, info: ResourceInfo) -> dict:
        crd = self.crd_of(info)
        return crds.version_schema(crd, info.version) if crd is not None else {}

    def table(self, info: ResourceInfo, objects: list[dict], include_object: str) -> dict:
        crd = self.crd_of(info) or {}
        columns = crds.printer_columns(crd, info.version)
        rows = []
        for obj in objects:
            row: dict[str, Any] = {"cells": crds.row_cells(obj, columns)}
            if include_object == "Object":
                row["object"] = obj
            elif include_object != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}
            rows.append(row)
        definitions = [{k: v for k, v in column.items() if k != "jsonPath"} for column in columns]
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": definitions, "rows": rows}

    # ---- following CRDs ----

    async def start(self) -> None:
        info = self.server.kinds.by_resource("apiextensions.k8s.io/v1/customresourcedefinitions")
        cache = self.server.watch_cache(info)
        cache.add_listener(self._on_event, self._on_restart)
        await cache.start()
        page = await self.server.registry.list_page(info, None, revision=None, limit=0, continue_token=None)
        for crd in page.items:
            self._apply(crd)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await task

    def _on_restart(self) -> None:
        self._spawn(self._relist())

    async def _relist(self) -> None:
        info = self.server.kinds.by_resource("apiextensions.k8s.io/v1/customresourcedefinitions")
        page = await self.server.registry.list_page(info, None, revision=None, limit=0, continue_token=None)
        names = {crd["metadata"]["name"] for crd in page.items}
        for name in list(self.crds):
            if name not in names:
                self._remove(name)
        for crd in page.items:
            self._apply(crd)

    def _on_event(self, event: CachedEvent) -> None:
        name = event.key.rsplit("/", 1)[-1]
        if event.type == "DELETED":
            self._remove(name)
        else:
            self._apply(event.object)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply(self, crd: dict) -> None:
        name = crd["metadata"]["name"]
        if crds.names_problems(crd):
            self._remove(name)
            return
        previous = self.crds.get(name)
        self.crds[name] = crd
        self._unserve(name)
        for info in crds.resource_infos(crd):
            existing = self.server.kinds.lookup(info.group, info.version, info.plural)
            if existing is not None:
                continue  # a built-in resource is never shadowed
            self.served[(info.group, info.version, info.plural)] = (info, crd)
            self.server.registry.register_strategy(info, CustomStrategy(info, crds.version_schema(crd, info.version)))
        self._publish()
        if previous is None or not _established(crd):
            if not _established(crd) and not crd["metadata"].get("deletionTimestamp"):
                self._spawn(self._establish(name))

    def _unserve(self, name: str) -> None:
        for key, (_info, crd) in list(self.served.items()):
            if crd["metadata"]["name"] == name:
                del self.served[key]

    def _remove(self, name: str) -> None:
        if self.crds.pop(name, None) is None:
            return
        self._unserve(name)
        self._publish()

    def _publish(self) -> None:
        """Discovery and OpenAPI follow the set of served kinds."""
        self.server.refresh_discovery()
        openapi = getattr(self.server, "openapi", None)
        if openapi is None:
            return
        for key in list(getattr(openapi, "custom", {})):
            group, version, _kind = key
            if not any((i.group, i.version, i.kind) == key for i in self.infos()):
                openapi.unregister_custom_schema(group, version, _kind)
        for crd in self.crds.values():
            for registration in crds.openapi_registrations(crd):
                openapi.register_custom_schema(**registration)

    async def _establish(self, name: str) -> None:
        """Set the CRD's NamesAccepted and Established conditions (and its accepted names)."""
        info = self.server.kinds.by_resource("apiextensions.k8s.io/v1/customresourcedefinitions")
        registry = self.server.registry
        for _attempt in range(5):
            try:
                kv = await registry.get_kv(info, None, name)
            except NotFound:
                return  # deleted already: nothing to establish
            crd = object_of(kv, info)
            if _established(crd):
                return
            crd["status"] = crds.accepted_status(crd)
            try:
                await registry.write_raw(info, crd, kv.mod_revision)
                return
            except Conflict:
                await asyncio.sleep(0.05)  # written meanwhile: read it again
            except NotFound:
                return


def _established(crd: dict) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or ()
    )

