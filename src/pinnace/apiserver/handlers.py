"""REST handlers: the Kubernetes resource paths turned into registry calls.

Paths: `/api/v1/...` and `/apis/<group>/<version>/...`, each resource both namespaced
(`namespaces/<ns>/<plural>[/<name>[/<subresource>]]`) and cluster-wide (`<plural>[/<name>...]`).
The HTTP method and the presence of a name give the verb (get, list, watch, create, update, patch,
delete, deletecollection); a verb the resource does not serve is a 405 Status.

Content negotiation follows kube-apiserver: request bodies in JSON, YAML or protobuf (the `k8s\\0`
envelope kubectl 1.32 sends for its imperative commands); responses in JSON (also when protobuf is
preferred but JSON accepted), YAML, or a meta.k8s.io/v1 `Table` / `PartialObjectMetadata(List)` when
the Accept header asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from aiohttp import web

from pinnace.api import tables, validation
from pinnace.api.kinds import ResourceInfo
from pinnace.api.meta import now_rfc3339
from pinnace.api.selectors import (
    SelectorError,
    allowed_fields,
    field_getter,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)
from pinnace.apiserver.conversion import hpa_v2_to_v1, needs_conversion
from pinnace.apiserver.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
    cause,
    encode_status,
    status_body,
    success_status,
)
from pinnace.apiserver.limits import check_depth
from pinnace.apiserver.registry import object_of, raw_object
from pinnace.apiserver.watchcache import CachedEvent, Subscriber, decode
from pinnace.store.base import Compacted, StoreError

if TYPE_CHECKING:
    from pinnace.apiserver.server import ApiServer

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit on request bodies
WATCH_WRITE_BATCH = 500  # watch events sent in one write when a watcher has a backlog
JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
TABLE_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PARTIAL_TYPE = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
PARTIAL_LIST_TYPE = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"


# ---- request parsing ----


@dataclass(slots=True)
class Target:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass(slots=True)
class Output:
    """What the client accepts: "json", "yaml", "table", "partial" (PartialObjectMetadata[List])."""

    format: str = "json"
    table_version: str = "v1"


def negotiate(accept: str | None) -> Output:
    if not accept:
        return Output()
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        options = dict(p.split("=", 1) for p in params if "=" in p)
        as_ = options.get("as")
        if media in ("application/json", "*/*", "application/*"):
            if as_ == "Table" and options.get("g") == "meta.k8s.io" and options.get("v") in ("v1", "v1beta1"):
                return Output("table", options["v"])
            if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList") and options.get("g") == "meta.k8s.io":
                return Output("partial")
            if as_ is None:
                return Output("json")
        elif media in ("application/yaml", "text/yaml") and as_ is None:
            return Output("yaml")
    raise NotAcceptable(
        "only the following media types are accepted: application/json, application/yaml, "
        "application/vnd.kubernetes.protobuf"
    )


def field_manager(request: web.Request) -> str | None:
    """The manager a write is recorded under: `fieldManager`, else the User-Agent's first part
    ("kubectl" of "kubectl/v1.32.0 (linux/amd64) ..."), as kube-apiserver defaults it (128 characters
    at most); None when neither is given."""
    manager = request.query.get("fieldManager")
    if manager:
        return manager
    agent = request.headers.get("User-Agent", "").split("/", 1)[0].strip()
    return agent[:128] or None


def _respond(data: Any, output: Output, status: int = 200, headers: dict | None = None) -> web.Response:
    if output.format == "yaml":
        return web.Response(
            body=yaml.safe_dump(data, sort_keys=False).encode(), status=status, content_type=YAML, headers=headers
        )
    response = web.Response(body=orjson.dumps(data), status=status, headers=headers)
    response.content_type = JSON
    return response


def _query_bool(query: Any, name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


def _dry_run(query: Any) -> bool:
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise BadRequest(f"unsupported dry run option '{value}'; only 'All' is supported")
    return bool(values)


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"invalid value for {name}: {raw!r} is not an integer") from None


# ---- the handler ----


@dataclass
class RequestState:
    warnings: list[str] = field(default_factory=list)


class WriteValidator:
    """Checks an object in kube-apiserver's two steps.

    `check_decoding(obj)` runs first, on the object as sent (or as patched): unknown and duplicate
    fields per the fieldValidation mode, and wrong JSON types (400, before defaulting can trip on them).
    Calling the validator runs last, on the defaulted object the registry is about to store: schema
    constraints, metadata rules and the kind's own rules (422 Invalid).
    """

    def __init__(self, info: ResourceInfo, strategy: Any, mode: str, duplicates: list[str], state: RequestState) -> None:
        self.info = info
        self.strategy = strategy
        self.mode = mode
        self.duplicates = duplicates
        self.state = state

    def check_decoding(self, obj: Any) -> None:
        info = self.info
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be an object")
        result = validation.validate_schema(info.group, info.version, info.kind, obj)
        if result.type_errors:
            raise BadRequest(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                + "; ".join(result.type_errors)
            )
        unknown = [f'unknown field "{path}"' for path in result.unknown_fields]
        dupes = [f'duplicate field "{name}"' for name in self.duplicates]
        if self.mode == "Strict" and (unknown or dupes):
            raise BadRequest("strict decoding error: " + ", ".join(unknown + dupes))
        if unknown:
            validation.drop_fields(obj, result.unknown_fields)
        if self.mode == "Warn":
            self.state.warnings.extend(unknown + dupes)

    def __call__(self, obj: dict, old: dict | None) -> None:
        info = self.info
        causes = list(validation.validate_schema(info.group, info.version, info.kind, obj).causes)
        meta = obj.get("metadata") or {}
        causes += validation.validate_metadata(info.kind, meta, info.namespaced)
        causes += self.strategy.validate(obj, old)
        if causes:
            raise Invalid.fields(info.kind, info.group, meta.get("name") or meta.get("generateName") or "", causes)


class CustomWriteValidator(WriteValidator):
    """Custom resources: pruned to their CRD's structural schema; its validation gives 422 causes."""

    def __init__(self, info: ResourceInfo, strategy: Any, mode: str, duplicates: list[str], state: RequestState,
                 schema: dict) -> None:
        super().__init__(info, strategy, mode, duplicates, state)
        self.schema = schema

    def check_decoding(self, obj: Any) -> None:
        from pinnace.api import crd as crds

        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be an object")
        unknown = [f'unknown field "{path}"' for path in crds.prune(dict(obj), self.schema)]
        dupes = [f'duplicate field "{name}"' for name in self.duplicates]
        if self.mode == "Strict" and (unknown or dupes):
            raise BadRequest("strict decoding error: " + ", ".join(unknown + dupes))
        crds.prune(obj, self.schema)
        if self.mode == "Warn":
            self.state.warnings.extend(unknown + dupes)

    def __call__(self, obj: dict, old: dict | None) -> None:
        meta = obj.get("metadata") or {}
        causes = validation.validate_metadata(self.info.kind, meta, self.info.namespaced)
        causes += self.strategy.validate(obj, old)
        if causes:
            raise Invalid.fields(self.info.kind, self.info.group, meta.get("name") or meta.get("generateName") or "", causes)


class ResourceHandlers:
    """Every resource verb. `server` gives the registry, watch caches, and configuration."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.registry = server.registry
        self._field_getters: dict[str, Any] = {}

    # ---- bodies ----

    async def read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > MAX_BODY:
            raise RequestEntityTooLarge("Request entity too large: limit is 3145728")
        chunks: list[bytes] = []
        total = 0
        while True:  # read() returns what has arrived so far; keep reading to the end of the body
            chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_BODY:
                raise RequestEntityTooLarge("Request entity too large: limit is 3145728")
            chunks.append(chunk)
        return b"".join(chunks)

    def decode_body(self, body: bytes, content_type: str) -> Any:
        media = content_type.split(";", 1)[0].strip().lower() if content_type else JSON
        if not body.strip():
            raise BadRequest("the request body is empty; send a JSON, YAML or protobuf object")
        if media != PROTOBUF:
            check_depth(body)  # before a recursive parser or encoder meets a pathological nesting
        if media in (JSON, ""):
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError as error:
                raise BadRequest(f"the body of the request was not valid JSON: {error}") from None
        if media in (YAML, "application/x-yaml", "text/yaml"):
            try:
                documents = list(yaml.safe_load_all(body))
            except yaml.YAMLError as error:
                raise BadRequest(f"the body of the request was not valid YAML: {error}") from None
            if len(documents) != 1:
                raise BadRequest("the body of the request must hold exactly one YAML document")
            return documents[0]
        if media == PROTOBUF:
            try:
                protobuf = importlib.import_module("pinnace.api.protobuf")
            except ModuleNotFoundError:
                raise UnsupportedMediaType(
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json, application/yaml"
                ) from None
            try:
                return protobuf.decode_protobuf_body(body)
            except ValueError as error:
                raise BadRequest(f"the protobuf body could not be decoded: {error}") from None
        raise UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml, application/vnd.kubernetes.protobuf"
        )

    def validator(self, info: ResourceInfo, request: web.Request, body: bytes, state: RequestState,
                  decoded: Any = None) -> WriteValidator:
        """The validation of one write, in the request's fieldValidation mode."""
        mode = request.query.get("fieldValidation") or "Warn"
        if mode not in validation.FIELD_VALIDATION_MODES:
            raise BadRequest(f"fieldValidation must be one of Strict, Warn, Ignore; got {mode!r}")
        duplicates: list[str] = []
        if mode != "Ignore" and body[:1] == b"{" and request.content_type in (JSON, ""):
            duplicates = validation.duplicate_fields(body, decoded)
        custom = self.server.custom
        if custom is not None and custom.is_custom(info):
            return CustomWriteValidator(info, self.registry.strategy(info), mode, duplicates, state, custom.schema(info))
        return WriteValidator(info, self.registry.strategy(info), mode, duplicates, state)

    # ---- selectors ----

    def matcher(self, info: ResourceInfo, namespace: str | None, query: Any, *, by_prefix: bool = True) -> Any:
        """A predicate over objects for the request's labelSelector and fieldSelector, and its
        namespace unless `by_prefix` (a store read under the namespace's key prefix needs no check)."""
        if by_prefix:
            namespace = None
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), allowed_fields(info.name))
        except SelectorError as error:
            raise BadRequest(str(error)) from None
        if labels.empty and fields.empty and not namespace:
            return None, fields
        getter = self._field_getters.get(info.name)
        if getter is None:
            getter = self._field_getters[info.name] = field_getter(info.name)

        def matches(obj: dict) -> bool:
            meta = obj.get("metadata") or {}
            if namespace and meta.get("namespace") != namespace:
                return False
            if not labels.empty and not labels.matches(meta.get("labels")):
                return False
            return fields.empty or fields.matches(getter(obj))

        return matches, fields

    def table(self, info: ResourceInfo, objects: list[dict], include_object: str, version: str = "v1") -> dict:
        custom = self.server.custom
        if custom is not None and custom.is_custom(info):
            table = custom.table(info, objects, include_object)
            table["apiVersion"] = f"meta.k8s.io/{version}"
            return table
        return tables.to_table(info, objects, include_object, version)

    # ---- verbs ----

    async def get(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        if output.format == "json" and target.subresource is None:
            kv = await self.registry.get_kv(info, target.namespace, target.name)  # type: ignore[arg-type]
            response = web.Response(body=raw_object(kv, info))
            response.content_type = JSON
            return response
        obj = await self.registry.get(info, target.namespace, target.name)  # type: ignore[arg-type]
        return self.render_object(info, obj, output, request.query)

    def render_object(self, info: ResourceInfo, obj: dict, output: Output, query: Any, status: int = 200,
                      headers: dict | None = None) -> web.Response:
        if output.format == "table":
            table = self.table(info, [obj], query.get("includeObject", "Metadata"), output.table_version)
            table["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            response = web.Response(body=orjson.dumps(table), status=status, headers=headers)
            response.content_type = "application/json"
            response.headers["Content-Type"] = TABLE_TYPE
            return response
        if output.format == "partial":
            response = web.Response(body=orjson.dumps(tables.partial(obj)), status=status, headers=headers)
            response.headers["Content-Type"] = PARTIAL_TYPE
            return response
        return _respond(obj, output, status, headers)

    def _list_revision(self, query: Any) -> int | None:
        rv = query.get("resourceVersion")
        match = query.get("resourceVersionMatch")
        if match and match not in ("Exact", "NotOlderThan"):
            raise BadRequest(f'resourceVersionMatch: Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"')
        if match and not rv:
            raise BadRequest("resourceVersionMatch is forbidden unless resourceVersion is provided")
        if not rv or rv == "0":
            if match == "Exact" and rv == "0":
                raise BadRequest('resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
            return None
        try:
            revision = int(rv)
        except ValueError:
            raise BadRequest(f"invalid resource version {rv!r}") from None
        if query.get("continue"):
            raise BadRequest('specifying resource version is not allowed when using continue')
        return revision if match == "Exact" else None

    async def list(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        query = request.query
        matches, fields = self.matcher(info, target.namespace, query)
        revision = self._list_revision(query)
        limit = max(_int_param(query, "limit") or 0, 0)  # a negative limit means none, as in Kubernetes
        name = fields.value_of("metadata.name")
        if name and (target.namespace or not info.namespaced) and revision is None and not query.get("continue"):
            # `kubectl wait`, `delete` and `rollout status` list one object by name: read its key.
            # The list's revision is taken before the read: the object read is then at least that new,
            # and a watch from the revision cannot skip a change the read did not see (taken after the
            # read, it could name a later write the read missed, and `kubectl wait` would never see it).
            list_revision = self.server.watch_cache(info).revision
            if not list_revision:
                list_revision = await self.registry.store.current_revision()
            kv = await self.registry.store.get(self.registry.key(info, target.namespace, name))
            items = []
            if kv is not None:
                obj = object_of(kv, info)
                if matches is None or matches(obj):
                    items.append(obj)
            if kv is not None:
                # Never older than what it holds: a watch from here must not replay the object's write.
                list_revision = max(list_revision, kv.mod_revision)
            page_items, rv, token, remaining = items, list_revision, None, None
        else:
            raw = matches is None and output.format == "json"
            page = await self.registry.list_page(
                info, target.namespace, revision=revision, limit=limit, continue_token=query.get("continue"),
                matches=matches, raw=raw,
            )
            page_items, rv, token, remaining = page.items, page.revision, page.continue_token, page.remaining
            if raw:
                # Splice the stored JSON into the list: no decoding or encoding of the items.
                meta_raw: dict[str, Any] = {"resourceVersion": str(rv)}
                if token:
                    meta_raw["continue"] = token
                    if remaining is not None:
                        meta_raw["remainingItemCount"] = remaining
                head = orjson.dumps({"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta_raw})
                body = head[:-1] + b',"items":[' + b",".join(page_items) + b"]}"  # type: ignore[arg-type]
                response = web.Response(body=body)
                response.content_type = JSON
                return response
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        if output.format == "table":
            table = self.table(info, page_items, query.get("includeObject", "Metadata"), output.table_version)
            table["metadata"] = meta
            response = web.Response(body=orjson.dumps(table))
            response.headers["Content-Type"] = TABLE_TYPE
            return response
        if output.format == "partial":
            body = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": [tables.partial(obj) for obj in page_items],
            }
            response = web.Response(body=orjson.dumps(body))
            response.headers["Content-Type"] = PARTIAL_LIST_TYPE
            return response
        body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta, "items": page_items}
        return _respond(body, output)

    async def create(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        state = RequestState()
        raw = await self.read_body(request)
        obj = self.decode_body(raw, request.headers.get("Content-Type", JSON))
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be an object")
        validate = self.validator(info, request, raw, state, obj)
        validate.check_decoding(obj)
        obj = await self.server.security.admit(request, target, "CREATE", obj)
        manager = field_manager(request)
        created = await self.registry.create(
            info, target.namespace, obj, dry_run=_dry_run(request.query),
            validate=self._with_managed_fields(info, validate, manager, None),
        )
        return self.render_object(info, created, output, request.query, 201, self._warning_headers(state))

    def _with_managed_fields(self, info: ResourceInfo, validate: Any, manager: str | None, subresource: str | None) -> Any:
        """Record the write in managedFields under `manager` (see `field_manager`)."""
        if not manager:
            return validate
        from pinnace.api import apply as ssa

        custom = self.server.custom
        schema = custom.schema_node(info) if custom is not None and custom.is_custom(info) else None

        def validate_and_track(obj: dict, old: dict | None) -> None:
            validate(obj, old)
            ssa.update_managed_fields(
                old, obj, manager, "Update", group=info.group, version=info.version, kind=info.kind,
                subresource=subresource, schema=schema,
            )

        return validate_and_track

    @staticmethod
    def _warning_headers(state: RequestState) -> dict | None:
        if not state.warnings:
            return None
        from multidict import CIMultiDict

        headers: CIMultiDict[str] = CIMultiDict()
        for warning in state.warnings:
            # Control characters (from field names in the body) cannot travel in a header line.
            text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in warning)
            headers.add("Warning", '299 - "' + text.replace('"', '\\"') + '"')
        return headers  # type: ignore[return-value]

    async def update(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        state = RequestState()
        raw = await self.read_body(request)
        obj = self.decode_body(raw, request.headers.get("Content-Type", JSON))
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be an object")
        validate = self.validator(info, request, raw, state, obj)
        validate.check_decoding(obj)
        manager = field_manager(request)
        if target.subresource == "finalize" and info.name == "v1/namespaces":
            result = await self.registry.finalize_namespace(target.name, obj)  # type: ignore[arg-type]
            return _respond(result, output)
        obj = await self.server.security.admit(request, target, "UPDATE", obj)
        updated, created = await self.registry.update(
            info, target.namespace, target.name,  # type: ignore[arg-type]
            obj, subresource=target.subresource, dry_run=_dry_run(request.query),
            validate=self._with_managed_fields(info, validate, manager, target.subresource),
        )
        return self.render_object(info, updated, output, request.query, 201 if created else 200, self._warning_headers(state))

    async def patch(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        from pinnace.api import patch as patching

        info = target.info
        state = RequestState()
        raw = await self.read_body(request)
        content_type = request.headers.get("Content-Type", "")
        query = request.query
        manager = query.get("fieldManager")
        force = _query_bool(query, "force")
        is_apply = patching.is_apply_content_type(content_type)
        if is_apply and not manager:
            raise BadRequest("PATCH, application/apply-patch+yaml requires fieldManager to be set")
        manager = manager or field_manager(request)
        if force and not is_apply:
            raise BadRequest("force may only be specified with application/apply-patch+yaml patches")
        dry_run = _dry_run(query)
        validate = self.validator(info, request, b"", state)
        for _attempt in range(10):
            try:
                kv = await self.registry.get_kv(info, target.namespace, target.name)  # type: ignore[arg-type]
                current = object_of(kv, info)
            except NotFound:
                if not is_apply or target.subresource:
                    raise
                kv, current = None, None
            try:
                custom = self.server.custom
                is_custom = custom is not None and custom.is_custom(info)
                patched = patching.apply_patch(
                    current, raw, content_type, group=info.group, version=info.version, kind=info.kind,
                    is_custom=is_custom, field_manager=manager, force=force, subresource=target.subresource,
                    schema=custom.schema_node(info) if is_custom else None,  # type: ignore[union-attr]
                )
            except patching.PatchError as error:
                status = error.status()
                raise ApiError(
                    status.get("message", ""), code=status["code"], reason=status.get("reason"),
                    causes=error.causes or None, name=target.name, group=info.group, kind=info.plural,
                ) from None
            validate.check_decoding(patched)
            patched = await self.server.security.admit(request, target, "UPDATE" if current else "CREATE", patched, current)
            tracked = validate if is_apply else self._with_managed_fields(info, validate, manager, target.subresource)
            if current is None:
                patched.setdefault("metadata", {}).setdefault("name", target.name)
                created = await self.registry.create(info, target.namespace, patched, dry_run=dry_run, validate=tracked)
                return self.render_object(info, created, output, query, 201, self._warning_headers(state))
            # The patch keeps the resourceVersion it read unless it set one: a concurrent write is a
            # Conflict the server retries, as kube-apiserver does for patches without a precondition.
            pinned = self._patch_sets_resource_version(raw, content_type)
            patched.setdefault("metadata", {})
            if not pinned:
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                updated, _ = await self.registry.update(
                    info, target.namespace, target.name, patched,  # type: ignore[arg-type]
                    subresource=target.subresource, dry_run=dry_run, validate=tracked, current=kv,
                )
            except Conflict:
                if pinned:
                    raise
                continue
            return self.render_object(info, updated, output, query, 200, self._warning_headers(state))
        raise Conflict.modified(info.plural, info.group, target.name or "")

    @staticmethod
    def _patch_sets_resource_version(raw: bytes, content_type: str) -> bool:
        """Whether the patch itself names metadata.resourceVersion (a precondition: no retry)."""
        if b"resourceVersion" not in raw:
            return False
        try:
            body = yaml.safe_load(raw) if "yaml" in content_type else orjson.loads(raw)
        except (yaml.YAMLError, orjson.JSONDecodeError):
            return False  # apply_patch reports the malformed body
        if isinstance(body, list):  # JSON patch operations
            return any(isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in body)
        meta = body.get("metadata") if isinstance(body, dict) else None
        return isinstance(meta, dict) and bool(meta.get("resourceVersion"))

    async def delete(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        options = await self._delete_options(request)
        await self.server.security.admit(request, target, "DELETE")
        obj, gone = await self.registry.delete(
            info, target.namespace, target.name, options, dry_run=_dry_run(request.query) or bool(options.get("dryRun"))  # type: ignore[arg-type]
        )
        strategy = self.registry.strategy(info)
        if gone and not strategy.return_deleted_object:
            body = success_status(target.name or "", info.group, info.plural, obj["metadata"].get("uid"))
            return _respond(body, Output("yaml" if output.format == "yaml" else "json"))
        status = 200 if gone or info.name == "v1/pods" else 202
        return self.render_object(info, obj, output if output.format != "table" else Output(), request.query, status)

    async def _delete_options(self, request: web.Request) -> dict:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await self.read_body(request)
            if raw.strip():
                decoded = self.decode_body(raw, request.headers.get("Content-Type", JSON))
                if not isinstance(decoded, dict):
                    raise BadRequest("DeleteOptions must be an object")
                options.update(decoded)
        query = request.query
        grace = _int_param(query, "gracePeriodSeconds")
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("orphanDependents"):
            options["orphanDependents"] = _query_bool(query, "orphanDependents")
        return options

    async def delete_collection(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        options = await self._delete_options(request)
        matches, _fields = self.matcher(info, target.namespace, request.query)
        page = await self.registry.list_page(info, target.namespace, revision=None, limit=0, continue_token=None, matches=matches)
        dry_run = _dry_run(request.query)
        deleted = []
        for obj in page.items:
            meta = obj["metadata"]
            with contextlib.suppress(NotFound):
                await self.server.security.admit(request, Target(info, meta.get("namespace"), meta["name"], None), "DELETE", None, obj)
                result, _gone = await self.registry.delete(info, meta.get("namespace"), meta["name"], options, dry_run=dry_run)
                deleted.append(result)
        body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": {"resourceVersion": str(page.revision)}, "items": deleted}
        return _respond(body, output if output.format in ("json", "yaml") else Output())

    # ---- subresources ----

    async def subresource(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info, sub = target.info, target.subresource
        method = request.method
        if sub == "approval" and method in ("PUT", "PATCH"):
            # certificatesigningrequests/approval changes the approval conditions, a part of status.
            target = Target(info, target.namespace, target.name, "status")
            return await (self.update if method == "PUT" else self.patch)(request, target, output)
        if sub == "status" or (sub == "finalize" and info.name == "v1/namespaces"):
            if method == "GET" and sub == "status":
                return await self.get(request, target, output)
            if method == "PUT":
                return await self.update(request, target, output)
            if method == "PATCH" and sub == "status":
                return await self.patch(request, target, output)
        elif sub == "scale":
            return await self.scale(request, target, output)
        elif sub == "binding" and method == "POST":
            return await self.binding(request, target, output)
        elif sub == "eviction" and method == "POST":
            return await self.eviction(request, target, output)
        elif sub == "token" and method == "POST" and info.name == "v1/serviceaccounts":
            return await self.server.security.tokens.token_request(request, target)
        elif sub in ("log", "exec", "attach", "portforward", "proxy") and info.name in ("v1/pods", "v1/nodes", "v1/services"):
            return await self.server.node_proxy(request, target, sub)
        raise MethodNotAllowed(
            f"the server does not allow this method on the requested resource ({method} {info.plural}/{sub})"
        )

    async def scale(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        custom = self.server.custom
        if custom is not None and custom.is_custom(info):  # at the paths its CRD names
            from pinnace.apiserver import customscale

            return await customscale.handle(self, request, target, output, custom.crd_of(info) or {})
        raw = b"" if request.method == "GET" else await self.read_body(request)
        # A write without a resourceVersion precondition is retried when a concurrent write (a
        # controller's status update) wins the compare-and-swap, as kube-apiserver's updates are.
        for _attempt in range(10):
            kv = await self.registry.get_kv(info, target.namespace, target.name)  # type: ignore[arg-type]
            parent = object_of(kv)
            scale = _scale_of(parent, info)
            if request.method == "GET":
                return _respond(scale, output)
            if request.method == "PUT":
                body = self.decode_body(raw, request.headers.get("Content-Type", JSON))
            elif request.method == "PATCH":
                from pinnace.api import patch as patching

                try:
                    body = patching.apply_patch(
                        scale, raw, request.headers.get("Content-Type", ""), group="autoscaling", version="v1",
                        kind="Scale", is_custom=False, field_manager=field_manager(request),
                        force=_query_bool(request.query, "force"), subresource="scale",
                    )
                except patching.PatchError as error:
                    status = error.status()
                    raise ApiError(status.get("message", ""), code=status["code"], reason=status.get("reason")) from None
            else:
                raise MethodNotAllowed(f"the server does not allow this method on the requested resource ({request.method} scale)")
            replicas = ((body or {}).get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise Invalid.fields(
                    "Scale", "autoscaling", target.name or "",
                    [cause("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
                )
            precondition = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if request.method == "PATCH" and precondition == scale["metadata"].get("resourceVersion"):
                precondition = None  # the patch kept the version it read: not a precondition of the client's
            if precondition and precondition != parent["metadata"]["resourceVersion"]:
                raise Conflict.modified(info.plural, info.group, target.name or "")
            if parent.get("spec", {}).get("replicas") != replicas:
                old = parent
                parent = {**parent, "spec": {**(parent.get("spec") or {}), "replicas": replicas},
                          "metadata": dict(parent["metadata"])}
                parent["metadata"]["generation"] = int(parent["metadata"].get("generation", 1)) + 1
                manager = field_manager(request)
                if manager:
                    from pinnace.api import apply as ssa

                    # As in Kubernetes, the scale subresource's writer owns the parent's spec.replicas.
                    ssa.update_managed_fields(old, parent, manager, "Update", group=info.group, version=info.version,
                                              kind=info.kind, subresource="scale")
                if not _dry_run(request.query):
                    try:
                        parent = await self.registry.write_raw(info, parent, kv.mod_revision)
                    except Conflict:
                        if precondition:
                            raise
                        continue
            return _respond(_scale_of(parent, info), output)
        raise Conflict.modified(info.plural, info.group, target.name or "")

    async def binding(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        raw = await self.read_body(request)
        body = self.decode_body(raw, request.headers.get("Content-Type", JSON))
        node = ((body or {}).get("target") or {}).get("name")
        name = target.name or ((body or {}).get("metadata") or {}).get("name")
        if not node:
            raise Invalid.fields("Binding", "", name or "", [cause("target.name", "Required value", "FieldValueRequired")])
        pods = self.server.kinds.by_resource("v1/pods")
        for _attempt in range(10):
            kv = await self.registry.get_kv(pods, target.namespace, name)
            pod = object_of(kv)
            meta = pod["metadata"]
            uid = ((body or {}).get("metadata") or {}).get("uid")
            if uid and uid != meta.get("uid"):
                raise Conflict(f"Operation cannot be fulfilled on pods/binding \"{name}\": the UID in the precondition ({uid}) does not match the UID in record ({meta.get('uid')}). The object might have been deleted and then recreated", name=name, kind="pods")
            if meta.get("deletionTimestamp"):
                raise Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is being deleted, cannot be assigned to a host', name=name, kind="pods")
            if pod["spec"].get("nodeName"):
                raise Conflict(
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
                    name=name, kind="pods/binding",
                )
            pod["spec"]["nodeName"] = node
            status = pod.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                               "lastTransitionTime": now_rfc3339()})
            status["conditions"] = conditions
            try:
                await self.registry.write_raw(pods, pod, kv.mod_revision)
            except Conflict:
                continue
            return _respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, Output(), 201)
        raise Conflict.modified("pods", "", name)

    async def eviction(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        raw = await self.read_body(request)
        body = self.decode_body(raw, request.headers.get("Content-Type", JSON)) or {}
        pods = self.server.kinds.by_resource("v1/pods")
        pod = await self.registry.get(pods, target.namespace, target.name)  # type: ignore[arg-type]
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed", "Pending") and not pod["metadata"].get("deletionTimestamp"):
            await self._check_disruption_budgets(pod)
        options = dict(body.get("deleteOptions") or {})
        await self.registry.delete(pods, target.namespace, target.name, options, dry_run=_dry_run(request.query))  # type: ignore[arg-type]
        return _respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, Output(), 201)

    async def _check_disruption_budgets(self, pod: dict) -> None:
        """A PodDisruptionBudget with no disruptions left refuses the eviction with 429, as Kubernetes does."""
        pdbs = self.server.kinds.by_resource("policy/v1/poddisruptionbudgets")
        namespace = pod["metadata"]["namespace"]
        page = await self.registry.list_page(pdbs, namespace, revision=None, limit=0, continue_token=None)
        labels = pod["metadata"].get("labels") or {}
        matching = []
        for pdb in page.items:
            try:
                if label_selector_from_dict((pdb.get("spec") or {}).get("selector")).matches(labels) and (pdb.get("spec") or {}).get("selector"):
                    matching.append(pdb)
            except SelectorError:
                continue
        if len(matching) > 1:
            raise ApiError("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", code=500, reason="InternalError")
        for pdb in matching:
            status = pdb.get("status") or {}
            name = pdb["metadata"]["name"]
            if status.get("observedGeneration", 0) < pdb["metadata"].get("generation", 1):
                raise TooManyRequests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    causes=[{"reason": "DisruptionBudget", "message": f"The disruption budget {name} is still being processed by the server."}],
                    retry_after=None,
                )
            allowed = status.get("disruptionsAllowed", 0)
            if allowed <= 0:
                raise TooManyRequests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    causes=[{"reason": "DisruptionBudget", "message": f"The disruption budget {name} needs {status.get('desiredHealthy', 0)} healthy pods and has {status.get('currentHealthy', 0)} currently"}],
                )
            status["disruptionsAllowed"] = allowed - 1
            kv = await self.registry.get_kv(pdbs, namespace, name)
            if str(kv.mod_revision) == pdb["metadata"]["resourceVersion"]:
                await self.registry.write_raw(pdbs, pdb, kv.mod_revision)

    # ---- watch ----

    async def watch(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        if self.server._stopping:
            raise ServiceUnavailable("the server is shutting down")  # clients re-watch elsewhere or later
        task = asyncio.current_task()
        if task is not None:
            self.server.watch_tasks.add(task)
        try:
            return await self._watch(request, target, output)
        finally:
            if task is not None:
                self.server.watch_tasks.discard(task)

    async def _watch(self, request: web.Request, target: Target, output: Output) -> web.StreamResponse:
        info = target.info
        query = request.query
        matches, _fields = self.matcher(info, target.namespace, query, by_prefix=False)
        timeout = _int_param(query, "timeoutSeconds")
        if timeout is None or timeout <= 0:
            timeout = self.server.config.watch_timeout
        bookmarks = _query_bool(query, "allowWatchBookmarks")
        send_initial = _query_bool(query, "sendInitialEvents")
        rv = query.get("resourceVersion") or ""
        cache = self.server.watch_cache(info)
        await cache.start()
        initial: list[dict] = []
        if rv in ("", "0") or send_initial:
            if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
                raise Invalid.fields("ListOptions", "meta.k8s.io", "", [cause("resourceVersionMatch", "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan", "FieldValueForbidden")])
            page = await self.registry.list_page(info, target.namespace, revision=None, limit=0, continue_token=None, matches=matches)
            initial, after = page.items, page.revision
        else:
            try:
                after = int(rv)
            except ValueError:
                raise BadRequest(f"invalid resource version {rv!r}") from None
        match_all = matches if matches is not None else (lambda obj: True)
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = TABLE_TYPE if output.format == "table" else JSON
        response.headers["Cache-Control"] = "no-cache, private"
        response.enable_chunked_encoding()
        await response.prepare(request)
        encoder = _WatchEncoder(info, output, query.get("includeObject", "Metadata"), self.table)
        for start in range(0, len(initial), WATCH_WRITE_BATCH):
            await response.write(b"".join(encoder.encode("ADDED", obj) for obj in initial[start:start + WATCH_WRITE_BATCH]))
        if send_initial and bookmarks:
            await response.write(encoder.bookmark(after, initial_end=True))
        fallback: asyncio.Task[None] | None = None
        if cache.can_serve(after):
            subscriber = cache.subscribe(after, match_all)
        else:
            subscriber = Subscriber(after, match_all, cache.queue_size)
            fallback = asyncio.create_task(self._direct_watch(cache, subscriber, after))
        self.server.watchers.add(subscriber)
        deadline = time.monotonic() + timeout
        last_revision = after
        interval = self.server.config.bookmark_interval
        next_bookmark = time.monotonic() + interval
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), min(remaining, interval, 5.0))
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client went away while the resource was quiet
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark and now < deadline:
                        await response.write(encoder.bookmark(max(last_revision, cache.revision)))
                        next_bookmark = now + interval
                    continue
                if item is None:
                    break
                # Send what is already queued in one write: one write per event lets a busy watcher fall
                # behind by thousands of events while the loop serves other requests.
                chunks: list[bytes] = []
                finished = False
                while True:
                    if item is None:
                        finished = True
                        break
                    kind, event = item
                    if kind == "ERROR":
                        chunks.append(orjson.dumps({"type": "ERROR", "object": event}) + b"\n")
                        finished = True
                        break
                    last_revision = event.revision
                    if kind == "DELETED" and event.type != "DELETED":
                        # The object left this watcher's selector: it sees the object as deleted.
                        chunks.append(encoder.event("DELETED", CachedEvent("DELETED", event.revision, event.key, event.object, None)))
                    else:
                        chunks.append(encoder.event(kind, event))
                    if len(chunks) >= WATCH_WRITE_BATCH:
                        break
                    try:
                        item = subscriber.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if chunks:
                    await response.write(b"".join(chunks))
                if finished:
                    break
        except ConnectionResetError:
            pass  # the client went away; a cancellation (server stop) propagates after the cleanup
        finally:
            subscriber.closed = True
            cache.unsubscribe(subscriber)
            self.server.watchers.discard(subscriber)
            if fallback is not None:
                fallback.cancel()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    async def _direct_watch(self, cache: Any, subscriber: Subscriber, after: int) -> None:
        """A revision older than the cache's window: watch the store itself (410 when compacted)."""
        try:
            async for event in self.registry.store.watch(cache.prefix, after):
                if event.type == "DELETED":
                    obj = decode(event.prev_value, event.revision) if event.prev_value else {"metadata": {}}
                    prev: dict | None = obj
                else:
                    obj = decode(event.value, event.revision)
                    prev = orjson.loads(event.prev_value) if event.prev_value else None
                subscriber.offer(CachedEvent(event.type, event.revision, event.key, obj, prev))
                if subscriber.closed:
                    return
        except Compacted as error:
            status = status_body(410, "Expired", f"too old resource version: {error.requested} ({error.compacted + 1})")
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.queue.put_nowait(("ERROR", status))  # type: ignore[arg-type]
        except StoreError as error:
            log.warning("direct watch on %s ended: %s", cache.prefix, error)
            subscriber.end()


class _WatchEncoder:
    def __init__(self, info: ResourceInfo, output: Output, include_object: str, table: Any) -> None:
        self.info = info
        self.output = output
        self.include_object = include_object
        self.table = table
        self.sent_columns = False

    def encode(self, event_type: str, obj: dict) -> bytes:
        if self.output.format == "table":
            table = self.table(self.info, [obj], self.include_object, self.output.table_version)
            if self.sent_columns:
                table["columnDefinitions"] = []
            self.sent_columns = True
            table["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return orjson.dumps({"type": event_type, "object": table}) + b"\n"
        if self.output.format == "partial":
            return orjson.dumps({"type": event_type, "object": tables.partial(obj)}) + b"\n"
        return orjson.dumps({"type": event_type, "object": obj}) + b"\n"

    def event(self, event_type: str, event: CachedEvent) -> bytes:
        if needs_conversion(self.info.group, self.info.version, self.info.plural):
            return self.encode(event_type, hpa_v2_to_v1(event.object))
        if not self.info.definition and event.object.get("apiVersion") != self.info.api_version:
            # A custom resource stored in another version (conversion strategy None).
            return self.encode(event_type, {**event.object, "apiVersion": self.info.api_version})
        if self.output.format in ("json", "yaml"):
            return event.encoded(event_type)  # serialized once for every watcher of the event
        return self.encode(event_type, event.object)

    def bookmark(self, revision: int, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(revision), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        if self.output.format == "table":
            obj: dict[str, Any] = {"kind": "Table", "apiVersion": f"meta.k8s.io/{self.output.table_version}",
                                   "metadata": {"resourceVersion": str(revision)}, "columnDefinitions": [], "rows": []}
        else:
            obj = {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _scale_of(parent: dict, info: ResourceInfo) -> dict:
    meta = parent["metadata"]
    spec = parent.get("spec") or {}
    status = parent.get("status") or {}
    selector = spec.get("selector")
    if info.kind == "ReplicationController":
        selector_text = ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
    else:
        selector_text = _selector_string(selector or {})
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": selector_text},
    }


def _selector_string(selector: dict) -> str:
    """A metav1.LabelSelector in the string form Kubernetes prints (`a=b,c in (d,e)`)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        op = expr.get("operator")
        values = ",".join(sorted(expr.get("values") or ()))
        if op == "In":
            parts.append(f"{expr['key']} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr['key']} notin ({values})")
        elif op == "Exists":
            parts.append(expr["key"])
        elif op == "DoesNotExist":
            parts.append(f"!{expr['key']}")
    return ",".join(parts)


def error_response(error: ApiError) -> web.Response:
    headers = dict(error.headers)
    if error.retry_after is not None or error.code == 429:
        headers.setdefault("Retry-After", str(error.retry_after or 1))
    response = web.Response(body=error.body(), status=error.code, headers=headers)
    response.content_type = JSON
    return response


def internal_error_response(message: str) -> web.Response:
    body = encode_status(status_body(500, "InternalError", message))
    response = web.Response(body=body, status=500)
    response.content_type = JSON
    return response

