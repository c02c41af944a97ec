"""The generic registry: Kubernetes object semantics on top of the revisioned store.

One `Registry` serves every built-in resource. It owns the key layout, metadata bookkeeping (uid,
creationTimestamp, generation, resourceVersion), optimistic concurrency, finalizers and graceful
deletion, and asks the kind's `Strategy` (pinnace.apiserver.strategies) for everything kind-specific.

Keys: `/registry/<plural>/<namespace>/<name>` for the core group and `/registry/<group>/<plural>/...`
for the others (so core Events and events.k8s.io Events never collide); cluster-scoped objects have no
namespace segment. Values are the object's JSON without `metadata.resourceVersion`, which is the
store revision and is filled in on every read.
"""

from __future__ import annotations

import base64
import datetime
import random
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from pinnace.api.kinds import ResourceInfo
from pinnace.api.meta import format_time, now_rfc3339, same_but_metadata
from pinnace.apiserver.conversion import hpa_v1_to_v2, hpa_v2_to_v1, needs_conversion
from pinnace.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    NotFound,
    cause,
)
from pinnace.apiserver.strategies import ServiceAllocator, Strategy, strategy_for
from pinnace.store.base import (
    Compacted,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RevisionMismatch,
    Store,
)

# Namespaces the NamespaceLifecycle admission plugin never lets anyone delete.
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# Random suffixes of generateName use Kubernetes' alphabet (no vowels, no look-alike characters).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def storage_prefix(info: ResourceInfo) -> str:
    return f"/registry/{info.plural}/" if not info.group else f"/registry/{info.group}/{info.plural}/"


def version_scoped_prefix(info: ResourceInfo) -> str:
    # Every version of a kind shares one key space (autoscaling/v1 and v2 HPAs: see conversion.py).
    return storage_prefix(info)


def new_uid() -> str:
    """A random (version 4) UUID. uids must be unique, not secret: the process-wide generator seeded
    from the OS is as unique as uuid4() and avoids a getrandom call per object."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def generate_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_NAME_ALPHABET) for _ in range(5))


@dataclass
class ListPage:
    items: list[dict]
    revision: int
    continue_token: str | None
    remaining: int | None


def encode_continue(revision: int, start_after: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start_after})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from None


def _object(kv: KeyValue, info: ResourceInfo | None = None) -> dict:
    obj = orjson.loads(kv.value)
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    if info is not None:
        if needs_conversion(info.group, info.version, info.plural):
            obj = hpa_v2_to_v1(obj)
        elif not info.definition and obj.get("apiVersion") != info.api_version:
            obj["apiVersion"] = info.api_version  # custom resources: conversion strategy None
    return obj


def raw_object(kv: KeyValue, info: ResourceInfo) -> bytes:
    """The stored JSON with its resourceVersion spliced in, without decoding it.

    Stored objects begin `{"kind":K,"apiVersion":V,"metadata":{` (the registry writes them so); the
    revision goes first into metadata. Anything else (a converted version) is decoded and re-encoded.
    """
    prefix = _prefixes.get(info.name)
    if prefix is None:
        prefix = _prefixes[info.name] = orjson.dumps({"kind": info.kind, "apiVersion": info.api_version})[:-1] + b',"metadata":{'
    value = kv.value
    if value.startswith(prefix) and not needs_conversion(info.group, info.version, info.plural):
        cut = len(prefix)
        version = b'"resourceVersion":"%d"' % kv.mod_revision
        return value[:cut] + version + (b"" if value[cut : cut + 1] == b"}" else b",") + value[cut:]
    return orjson.dumps(_object(kv, info))


_prefixes: dict[str, bytes] = {}


def _stored(obj: dict, info: ResourceInfo | None = None) -> bytes:
    if info is not None and needs_conversion(info.group, info.version, info.plural):
        obj = hpa_v1_to_v2(obj)
    meta = obj["metadata"]
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


_RESOURCE_VERSION = frozenset({"resourceVersion"})


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.allocator = ServiceAllocator(store)
        self._strategies: dict[str, Strategy] = {}
        self.namespaces: dict[str, dict] = {}  # name -> Namespace, kept current by the server's watch

    def register_strategy(self, info: ResourceInfo, strategy: Strategy) -> None:
        """The strategy of a kind served beyond the built-in ones (custom resources)."""
        self._strategies[info.name] = strategy

    def strategy(self, info: ResourceInfo) -> Strategy:
        strategy = self._strategies.get(info.name)
        if strategy is None:
            strategy = strategy_for(info.name, info.kind, info.group, info.plural, info.subresources)
            self._strategies[info.name] = strategy
        return strategy

    @staticmethod
    def key(info: ResourceInfo, namespace: str | None, name: str) -> str:
        prefix = version_scoped_prefix(info)
        return f"{prefix}{namespace}/{name}" if info.namespaced else f"{prefix}{name}"

    @staticmethod
    def prefix(info: ResourceInfo, namespace: str | None) -> str:
        prefix = version_scoped_prefix(info)
        return f"{prefix}{namespace}/" if info.namespaced and namespace else prefix

    # ---- reads ----

    async def get_kv(self, info: ResourceInfo, namespace: str | None, name: str) -> KeyValue:
        kv = await self.store.get(self.key(info, namespace, name))
        if kv is None:
            raise NotFound.object(info.plural, info.group, name)
        return kv

    async def get(self, info: ResourceInfo, namespace: str | None, name: str) -> dict:
        return _object(await self.get_kv(info, namespace, name), info)

    async def list_page(
        self,
        info: ResourceInfo,
        namespace: str | None,
        *,
        revision: int | None,
        limit: int,
        continue_token: str | None,
        matches: Any = None,
        raw: bool = False,
    ) -> ListPage:
        """Up to `limit` matching objects (0: all), with a continue token when more remain.

        `raw` (only without `matches`): the items are JSON bytes (see `raw_object`), not dicts.
        """
        prefix = self.prefix(info, namespace)
        start_after = None
        if continue_token:
            revision, start_after = decode_continue(continue_token)
            start_after = prefix + start_after
        items: list[dict] = []
        remaining: int | None = None
        try:
            while True:
                want = 0 if not limit else max(limit - len(items), 1)
                if limit and matches is not None:
                    want = max(want, 500)  # selectors filter: read ahead rather than page one by one
                result = await self.store.list(prefix, revision=revision, limit=want, start_after=start_after)
                revision = result.revision
                last_key = None
                for kv in result.items:
                    last_key = kv.key
                    if raw:
                        items.append(raw_object(kv, info))  # type: ignore[arg-type]
                        if limit and len(items) >= limit:
                            break
                        continue
                    obj = _object(kv, info)
                    if matches is None or matches(obj):
                        items.append(obj)
                        if limit and len(items) >= limit:
                            break
                if limit and len(items) >= limit:
                    more = result.more or (last_key != result.items[-1].key)
                    if more:
                        token = encode_continue(revision, last_key[len(prefix) :])  # type: ignore[index]
                        if matches is None:
                            consumed = result.items.index(next(kv for kv in result.items if kv.key == last_key))
                            remaining = result.remaining + (len(result.items) - consumed - 1)
                        return ListPage(items, revision, token, remaining)
                    return ListPage(items, revision, None, None)
                if not result.more or not result.items:
                    return ListPage(items, revision, None, None)
                start_after = result.items[-1].key
        except Compacted:
            if continue_token:
                raise Expired(
                    "The provided continue parameter is too old to display a consistent list result. You can "
                    "start a new list without the continue parameter, or use the continue token in this "
                    "response to retrieve the remainder of the results. Continuing with the provided token "
                    "results in an inconsistent list - objects that were created, modified, or deleted between "
                    "the time the first chunk was returned and now may show up in the list."
                ) from None
            raise Expired(f"resourceVersion {revision} is too old; re-list without resourceVersion") from None
        except FutureRevision as error:
            raise Expired(
                f"Too large resource version: {error.requested}, current: {error.current}",
                code=504,
                reason="Timeout",
            ) from None

    # ---- namespace checks ----

    async def namespace_for_write(self, namespace: str) -> None:
        """404 for a missing namespace, 403 for one being deleted (Kubernetes' NamespaceLifecycle)."""
        ns = self.namespaces.get(namespace)
        if ns is None:
            kv = await self.store.get(f"/registry/namespaces/{namespace}")
            if kv is None:
                raise NotFound.object("namespaces", "", namespace)
            ns = orjson.loads(kv.value)
        if (ns.get("metadata") or {}).get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            raise Forbidden(
                f"unable to create new content in namespace {namespace} because it is being terminated",
                name=namespace,
                kind="namespaces",
            )

    # ---- writes ----

    def _check_identity(self, info: ResourceInfo, obj: dict, namespace: str | None) -> dict:
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be a JSON or YAML object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != info.api_version:
            raise BadRequest(
                f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})"
            )
        if kind and kind != info.kind:
            raise BadRequest(f"the kind in the data ({kind}) does not match the expected kind ({info.kind})")
        meta = obj.get("metadata")
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        # kind, apiVersion and metadata lead, as kube-apiserver writes objects; `raw_object` relies on it.
        rest = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata")}
        obj.clear()
        obj["kind"], obj["apiVersion"], obj["metadata"] = info.kind, info.api_version, meta
        obj.update(rest)
        if info.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise BadRequest("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace or body_ns
        else:
            meta.pop("namespace", None)
        return meta

    async def create(
        self,
        info: ResourceInfo,
        namespace: str | None,
        obj: dict,
        *,
        dry_run: bool = False,
        validate: Any = None,
    ) -> dict:
        strategy = self.strategy(info)
        meta = self._check_identity(info, obj, namespace)
        if info.namespaced:
            if not meta.get("namespace"):
                raise BadRequest("the namespace of the object must be set")
            await self.namespace_for_write(meta["namespace"])
        if meta.get("resourceVersion"):
            raise BadRequest("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(meta["generateName"])
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(transient, None)
        if strategy.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        strategy.prepare_create(obj)
        if validate is not None:
            validate(obj, None)
        key = self.key(info, meta.get("namespace"), meta["name"])
        claimed: list = []
        if info.name == "v1/services":
            claimed = await self.allocator.allocate(obj, None, key)
        if dry_run:
            await self.allocator.release(claimed)
            return obj
        try:
            revision = await self.store.create(key, _stored(obj, info))
        except KeyExists:
            await self.allocator.release(claimed)
            raise AlreadyExists.object(info.plural, info.group, meta["name"]) from None
        except BaseException:
            await self.allocator.release(claimed)
            raise
        meta["resourceVersion"] = str(revision)
        return obj

    async def update(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        obj: dict,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        validate: Any = None,
        current: KeyValue | None = None,
    ) -> tuple[dict, bool]:
        """PUT semantics; returns (stored object, created). `current` skips re-reading the object."""
        strategy = self.strategy(info)
        meta = self._check_identity(info, obj, namespace)
        if meta.get("name") and meta["name"] != name:
            raise BadRequest(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        key = self.key(info, namespace, name)
        kv = current if current is not None else await self.store.get(key)
        if kv is None:
            if strategy.allow_create_on_update and subresource is None:
                meta.pop("resourceVersion", None)
                return await self.create(info, namespace, obj, dry_run=dry_run, validate=validate), True
            raise NotFound.object(info.plural, info.group, name)
        old = _object(kv, info)
        requested_rv = meta.get("resourceVersion")
        if requested_rv and requested_rv != old["metadata"]["resourceVersion"]:
            raise Conflict.modified(info.plural, info.group, name)
        if meta.get("uid") and meta["uid"] != old["metadata"].get("uid"):
            raise Conflict(
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old['metadata'].get('uid')}",
                name=name, group=info.group, kind=info.plural,
            )
        old_meta = old["metadata"]
        if subresource == "status":
            new = strategy.prepare_status_update(obj, old)
            meta = new["metadata"]
        else:
            new = obj
            # Fields only the server sets keep their stored values.
            for fixed in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if fixed in old_meta:
                    meta[fixed] = old_meta[fixed]
                else:
                    meta.pop(fixed, None)
            if info.namespaced:
                meta["namespace"] = old_meta.get("namespace")
            strategy.prepare_update(new, old)
            if strategy.tracks_generation and strategy.spec_changed(new, old):
                meta["generation"] = int(old_meta.get("generation", 0)) + 1
            if old_meta.get("deletionTimestamp"):
                # Finalizers may be removed from an object being deleted but not added.
                added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
                if added:
                    raise Invalid.fields(
                        info.kind, info.group, name,
                        [cause("metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}", "FieldValueForbidden")],
                    )
        if validate is not None:
            validate(new, old)
        claimed: list = []
        if info.name == "v1/services" and subresource is None:
            claimed = await self.allocator.allocate(new, old, key)
        if dry_run:
            await self.allocator.release(claimed)
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            return new, False
        # Deleting object whose last finalizer just went: the update completes the deletion.
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
            info.name == "v1/pods" and meta.get("deletionGracePeriodSeconds")
        ):
            try:
                deleted = await self.store.delete(key, kv.mod_revision)
            except (RevisionMismatch, KeyNotFound):
                raise Conflict.modified(info.plural, info.group, name) from None
            await self._after_delete(info, old)
            new["metadata"]["resourceVersion"] = str(deleted.mod_revision)
            return new, False
        if same_but_metadata(new, old, _RESOURCE_VERSION):
            # As Kubernetes: a write that changes nothing is not written, and the resourceVersion stays.
            await self.allocator.release(claimed)
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            return new, False
        try:
            revision = await self.store.update(key, _stored(new, info), kv.mod_revision)
        except RevisionMismatch:
            await self.allocator.release(claimed)
            raise Conflict.modified(info.plural, info.group, name) from None
        except KeyNotFound:
            await self.allocator.release(claimed)
            raise NotFound.object(info.plural, info.group, name) from None
        if info.name == "v1/services" and subresource is None:
            await self.allocator.release_unused(new, old)
        new["metadata"]["resourceVersion"] = str(revision)
        return new, False

    async def delete(
        self,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        options: dict,
        *,
        dry_run: bool = False,
    ) -> tuple[dict, bool]:
        """DELETE semantics; returns (the object, gone) — gone False while finalizers or grace remain."""
        strategy = self.strategy(info)
        key = self.key(info, namespace, name)
        for _attempt in range(8):
            kv = await self.get_kv(info, namespace, name)
            obj = _object(kv, info)
            meta = obj["metadata"]
            preconditions = options.get("preconditions") or {}
            if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                raise Conflict(
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta.get('uid')}",
                    name=name, group=info.group, kind=info.plural,
                )
            if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta["resourceVersion"]:
                raise Conflict(
                    f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                    name=name, group=info.group, kind=info.plural,
                )
            policy = options.get("propagationPolicy")
            if options.get("orphanDependents") is True and not policy:
                policy = "Orphan"
            elif options.get("orphanDependents") is False and not policy:
                policy = "Background"
            if policy not in (None, "Orphan", "Background", "Foreground"):
                raise Invalid.fields(
                    "DeleteOptions", "", "",
                    [cause("propagationPolicy", f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"', "FieldValueNotSupported")],
                )
            finalizers = list(meta.get("finalizers") or ())
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
                finalizers = [f for f in finalizers if f != "orphan"]
            elif policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
                finalizers = [f for f in finalizers if f != "foregroundDeletion"]
            elif policy == "Background":
                finalizers = [f for f in finalizers if f not in ("orphan", "foregroundDeletion")] if not meta.get("deletionTimestamp") else finalizers
            requested = options.get("gracePeriodSeconds")
            grace = strategy.grace_period(obj, requested)
            if info.name == "v1/namespaces":
                return await self._delete_namespace(info, key, kv, obj, dry_run)
            pending = bool(finalizers) or grace > 0
            if not pending:
                if dry_run:
                    return obj, True
                try:
                    deleted = await self.store.delete(key, kv.mod_revision)
                except RevisionMismatch:
                    continue
                except KeyNotFound:
                    raise NotFound.object(info.plural, info.group, name) from None
                obj["metadata"]["resourceVersion"] = str(deleted.mod_revision)
                await self._after_delete(info, obj)
                return obj, True
            changed = False
            if finalizers != list(meta.get("finalizers") or ()):
                meta["finalizers"] = finalizers
                changed = True
            now = datetime.datetime.now(datetime.UTC)
            if grace > 0:
                deadline = format_time(now + datetime.timedelta(seconds=grace))
                current_grace = meta.get("deletionGracePeriodSeconds")
                # A second delete may shorten the grace period, never extend it.
                if current_grace is None or grace < current_grace:
                    meta["deletionTimestamp"] = deadline
                    meta["deletionGracePeriodSeconds"] = grace
                    changed = True
            elif not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = format_time(now)
                meta["deletionGracePeriodSeconds"] = 0
                changed = True
            elif meta.get("deletionGracePeriodSeconds"):
                meta["deletionGracePeriodSeconds"] = 0
                changed = True
            if not changed or dry_run:
                return obj, False
            try:
                revision = await self.store.update(key, _stored(obj, info), kv.mod_revision)
            except RevisionMismatch:
                continue
            meta["resourceVersion"] = str(revision)
            return obj, False
        raise Conflict.modified(info.plural, info.group, name)

    async def _delete_namespace(self, info: ResourceInfo, key: str, kv: KeyValue, obj: dict, dry_run: bool) -> tuple[dict, bool]:
        """Namespaces go Terminating; the namespace controller empties them and clears spec.finalizers."""
        meta = obj["metadata"]
        if meta["name"] in IMMORTAL_NAMESPACES:
            raise Forbidden(
                f'namespaces "{meta["name"]}" is forbidden: this namespace may not be deleted',
                name=meta["name"], kind="namespaces",
            )
        if not (obj.get("spec") or {}).get("finalizers") and not meta.get("finalizers"):
            if not dry_run:
                deleted = await self.store.delete(key, kv.mod_revision)
                meta["resourceVersion"] = str(deleted.mod_revision)
            return obj, True
        if meta.get("deletionTimestamp"):
            return obj, False
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        if not dry_run:
            try:
                revision = await self.store.update(key, _stored(obj, info), kv.mod_revision)
            except RevisionMismatch:
                raise Conflict.modified(info.plural, info.group, meta["name"]) from None
            meta["resourceVersion"] = str(revision)
            self.namespaces[meta["name"]] = obj
        return obj, False

    async def finalize_namespace(self, name: str, body: dict) -> dict:
        """PUT namespaces/<name>/finalize: set spec.finalizers; a deleting namespace without any goes away."""
        from pinnace.api.kinds import registry as kind_registry

        info = kind_registry().by_resource("v1/namespaces")
        key = self.key(info, None, name)
        kv = await self.get_kv(info, None, name)
        obj = _object(kv)
        obj.setdefault("spec", {})["finalizers"] = list((body.get("spec") or {}).get("finalizers") or [])
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not obj["spec"]["finalizers"] and not meta.get("finalizers"):
            deleted = await self.store.delete(key, kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            return obj
        revision = await self.store.update(key, _stored(obj, info), kv.mod_revision)
        meta["resourceVersion"] = str(revision)
        return obj

    async def _after_delete(self, info: ResourceInfo, obj: dict) -> None:
        if info.name == "v1/services":
            await self.allocator.release_unused(None, obj)

    async def write_raw(self, info: ResourceInfo, obj: dict, expected: int) -> dict:
        """Store `obj` as is over revision `expected` (subresources that edit the parent directly)."""
        meta = obj["metadata"]
        key = self.key(info, meta.get("namespace"), meta["name"])
        try:
            revision = await self.store.update(key, _stored(obj, info), expected)
        except RevisionMismatch:
            raise Conflict.modified(info.plural, info.group, meta["name"]) from None
        except KeyNotFound:
            raise NotFound.object(info.plural, info.group, meta["name"]) from None
        meta["resourceVersion"] = str(revision)
        return obj


def object_of(kv: KeyValue, info: ResourceInfo | None = None) -> dict:
    """The object stored in `kv`, with its resourceVersion, in `info`'s version."""
    return _object(kv, info)
