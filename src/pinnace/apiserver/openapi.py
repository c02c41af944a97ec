"""OpenAPI v3 and v2 documents, generated from the same schemas the server validates with.

kubectl depends on these (see shared research "kubectl-wire"):
- `/openapi/v3` is an index `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=H"}}}`;
  each group-version document is served at that URL with `Cache-Control: public, immutable` and an
  `ETag`, so kubectl keeps it in its HTTP cache and only asks for the index again. A stale hash is
  redirected to the current one, as kube-apiserver does.
- kubectl 1.29+ validates on the server only when a PATCH operation for the kind lists the
  `fieldValidation` query parameter, and computes client-side-apply strategic merge patches from the
  v3 schemas only when that operation's `requestBody.content` lists
  `application/strategic-merge-patch+json`. `kubectl explain` finds schemas by their
  `x-kubernetes-group-version-kind`.
- kubectl 1.27 and 1.28 use `/openapi/v2` in the gnostic protobuf form
  (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) and never ask for JSON; JSON is
  still served to other clients. The protobuf encoder below follows the public `openapi_v2` proto of
  gnostic: the field numbers are the `_GNOSTIC` table.

Schema conversion from the JSON-schema flavour in `kubernetes-validate`: nullable type lists become a
single type, `$ref`s point into `#/components/schemas/` (v3) or `#/definitions/` (v2), a `$ref` with a
description beside it becomes `allOf: [{$ref}]` in v3 (kube-apiserver's shape, which `kubectl explain`
prints the description of), and the `apiVersion`/`kind` enums the package adds are dropped.

Lean documents (where pinnace deliberately differs): kubectl re-parses the whole group-version
document three times for every object it applies, so for the commands that only need what that
reads (every kubectl command but `explain`, told apart by kubectl's `Kubectl-Command` header) the
index points at a lean variant with its own hash URL: one PATCH operation per kind with its
`fieldValidation` parameter and whether it takes strategic merge patches, and the kinds' schemas cut
down to what kubectl's strategic-merge-patch lookups can reach (`lean_document`, `_PatchShapes`).
Every lookup kubectl makes while diffing valid objects answers as it does on the full document.
Hash URLs name their variant, so caches never mix them; every other client gets the full document.

Custom resources: `OpenAPIService.register_custom_schema(...)` adds a kind with its structural schema
(a CRD's `openAPIV3Schema`); documents of that group-version and v2 are regenerated on next request.
Documents are cached until the set of served resources changes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from pinnace.api import protowire as pw
from pinnace.api import schemas

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
V2_PROTOBUF_ALT = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
PATCH_TYPES_BUILTIN = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
PATCH_TYPES_CUSTOM = PATCH_TYPES_BUILTIN[:3]
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}

_PARAM_DOCS = {
    "pretty": "If 'true', then the output is pretty printed.",
    "dryRun": "When present, indicates that modifications should not be persisted. An invalid or unrecognized "
    "dryRun directive will result in an error response and no further processing of the request. Valid values "
    "are: - All: all dry run stages will be processed",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
    "force": 'Force is going to "force" Apply requests. It means user will re-acquire conflicting fields '
    "owned by other people. Force flag must be unset for non-apply patch requests.",
    "name": "name of the resource",
    "namespace": "object name and auth scope, such as for teams and projects",
    "labelSelector": "A selector to restrict the list of returned objects by their labels.",
    "fieldSelector": "A selector to restrict the list of returned objects by their fields.",
    "limit": "limit is a maximum number of responses to return for a list call.",
    "continue": "The continue option should be set when retrieving more results from the server.",
    "resourceVersion": "resourceVersion sets a constraint on what resource versions a request may be served from.",
    "resourceVersionMatch": "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    "timeoutSeconds": "Timeout for the list/watch call.",
    "watch": "Watch for changes to the described resources and return them as a stream of add, update, and "
    "remove notifications.",
    "allowWatchBookmarks": 'allowWatchBookmarks requests watch events with type "BOOKMARK".',
    "gracePeriodSeconds": "The duration in seconds before the object should be deleted.",
    "propagationPolicy": "Whether and how garbage collection will be performed.",
    "orphanDependents": "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7.",
}
_INTEGER_PARAMS = {"limit", "timeoutSeconds", "gracePeriodSeconds"}
_BOOLEAN_PARAMS = {"force", "watch", "allowWatchBookmarks", "orphanDependents"}


# --- schema conversion --------------------------------------------------------------------------


def _convert(value: Any, ref_prefix: str, v3: bool, *, top: bool = False, has_gvk: bool = False) -> Any:
    if isinstance(value, list):
        return [_convert(item, ref_prefix, v3) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("$schema", "$id"):
            continue
        if key == "$ref" and isinstance(item, str):
            out["$ref"] = ref_prefix + item.rsplit("/", 1)[-1]
        elif key == "type" and isinstance(item, list):
            types = [t for t in item if t != "null"]
            if len(types) == 1:
                out["type"] = types[0]
        elif key == "additionalProperties" and item is False:
            continue
        elif key == "properties" and isinstance(item, dict):
            props = {}
            for name, sub in item.items():
                converted = _convert(sub, ref_prefix, v3)
                if top and has_gvk and name in ("apiVersion", "kind") and isinstance(converted, dict):
                    converted.pop("enum", None)
                props[name] = converted
            out["properties"] = props
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _convert(item, ref_prefix, v3)
        elif key in ("allOf", "oneOf", "anyOf"):
            out[key] = [_convert(sub, ref_prefix, v3) for sub in item]
        else:
            out[key] = item
    if v3 and "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
        if "default" not in out and "description" in out:
            out["default"] = {}
    return out


def _definition_schema(name: str, ref_prefix: str, v3: bool) -> dict:
    raw = schemas.definition(name)
    if name in _SPECIAL:
        special = dict(_SPECIAL[name])
        if "description" in raw:
            special["description"] = raw["description"]
        return special
    return _convert(raw, ref_prefix, v3, top=True, has_gvk="x-kubernetes-group-version-kind" in raw)


# --- resources and paths --------------------------------------------------------------------------


@dataclass
class CustomKind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    schema: dict  # a structural schema, as a CRD's openAPIV3Schema
    subresources: tuple[str, ...] = ()  # "status", "scale"
    list_kind: str = ""

    @property
    def definition(self) -> str:
        return ".".join(reversed(self.group.split("."))) + f".{self.version}.{self.kind}"


@dataclass
class _Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...]
    definition: str
    subresources: dict[str, tuple[str, str, str, tuple[str, ...]]] = field(default_factory=dict)
    custom: bool = False


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _param(name: str, location: str = "query", required: bool = False) -> dict:
    out: dict[str, Any] = {"name": name, "in": location, "description": _PARAM_DOCS.get(name, name)}
    if required:
        out["required"] = True
    kind = "integer" if name in _INTEGER_PARAMS else "boolean" if name in _BOOLEAN_PARAMS else "string"
    out["schema"] = {"type": kind, "uniqueItems": True}
    return out


def _operations(res: _Resource, ref: Callable[[str], dict], v3: bool) -> dict[str, dict]:
    """path -> {method -> operation} for one resource, in kube-apiserver's shape."""
    gvk = {"group": res.group, "version": res.version, "kind": res.kind}
    base = "/" + _gv_path(res.group, res.version)
    scope = base + ("/namespaces/{namespace}" if res.namespaced else "")
    collection = f"{scope}/{res.plural}"
    item = collection + "/{name}"
    list_def = res.definition + "List" if res.custom else _list_definition(res.definition)
    write_params = ["dryRun", "fieldManager", "fieldValidation"]
    patch_types = PATCH_TYPES_CUSTOM if res.custom else PATCH_TYPES_BUILTIN
    paths: dict[str, dict] = {}
    ident = _operation_id(res)

    def op(
        action: str,
        verb: str,
        params: list[str],
        body: str | None = None,
        body_types=None,
        responses: tuple[str, ...] = ("200",),
        response: str | None = None,
        kind_gvk: dict = gvk,
    ) -> dict:
        operation: dict[str, Any] = {
            "tags": [_tag(res.group, res.version)],
            "description": f"{verb} {res.kind}",
            "operationId": f"{verb}{ident}",
            "parameters": [_param(p) for p in params],
            "responses": {
                code: {
                    "description": "OK" if code == "200" else "Created" if code == "201" else "Accepted",
                    "content": {"application/json": {"schema": ref(response or res.definition)}},
                }
                for code in responses
            },
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": kind_gvk,
        }
        if body is not None:
            operation["requestBody"] = {
                "content": {t: {"schema": ref(body)} for t in (body_types or ("*/*",))},
                "required": True,
            }
        return operation

    verbs = set(res.verbs)
    ops: dict[str, dict] = {}
    if "list" in verbs:
        ops["get"] = op(
            "list",
            "list",
            [
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "resourceVersionMatch",
                "timeoutSeconds",
                "watch",
                "allowWatchBookmarks",
            ],
            response=list_def,
        )
    if "create" in verbs:
        ops["post"] = op("post", "create", write_params, res.definition, responses=("200", "201", "202"))
    if "deletecollection" in verbs:
        ops["delete"] = op(
            "deletecollection",
            "deletecollection",
            ["dryRun", "gracePeriodSeconds", "propagationPolicy", "labelSelector", "fieldSelector"],
            META + "DeleteOptions",
            response=META + "Status",
        )
    if ops:
        paths[collection] = ops
    ops = {}
    if "get" in verbs:
        ops["get"] = op("get", "read", [])
    if "update" in verbs:
        ops["put"] = op("put", "replace", write_params, res.definition, responses=("200", "201"))
    if "patch" in verbs:
        ops["patch"] = op(
            "patch", "patch", [*write_params, "force"], META + "Patch", patch_types, responses=("200", "201")
        )
    if "delete" in verbs:
        ops["delete"] = op(
            "delete",
            "delete",
            ["dryRun", "gracePeriodSeconds", "propagationPolicy"],
            META + "DeleteOptions",
            responses=("200", "202"),
            response=META + "Status",
        )
    if ops:
        paths[item] = ops
    for name, (sgroup, sversion, skind, sverbs) in res.subresources.items():
        if name not in ("status", "scale"):
            continue
        sub_def = (
            res.definition
            if name == "status"
            else (schemas.definition_for_gvk(sgroup, sversion, skind) or res.definition)
        )
        sub_gvk = gvk if name == "status" else {"group": sgroup, "version": sversion, "kind": skind}
        sub_ops: dict[str, dict] = {}
        if "get" in sverbs:
            sub_ops["get"] = op("get", "read", [], response=sub_def, kind_gvk=sub_gvk)
        if "update" in sverbs:
            sub_ops["put"] = op(
                "put",
                "replace",
                write_params,
                sub_def,
                responses=("200", "201"),
                response=sub_def,
                kind_gvk=sub_gvk,
            )
        if "patch" in sverbs:
            sub_ops["patch"] = op(
                "patch",
                "patch",
                [*write_params, "force"],
                META + "Patch",
                patch_types,
                responses=("200", "201"),
                response=sub_def,
                kind_gvk=sub_gvk,
            )
        for operation in sub_ops.values():
            operation["operationId"] += name.capitalize()
        if sub_ops:
            paths[f"{item}/{name}"] = sub_ops
    if "list" in verbs and res.namespaced:
        paths[f"{base}/{res.plural}"] = {
            "get": {
                **op(
                    "list",
                    "list",
                    [
                        "labelSelector",
                        "fieldSelector",
                        "limit",
                        "continue",
                        "resourceVersion",
                        "timeoutSeconds",
                        "watch",
                    ],
                    response=list_def,
                ),
                "operationId": f"list{ident}ForAllNamespaces",
            }
        }
    for path, ops in paths.items():
        params = []
        if "{name}" in path:
            params.append(_param("name", "path", True))
        if "{namespace}" in path:
            params.append(_param("namespace", "path", True))
        for operation in ops.values():
            operation["parameters"] = params + operation["parameters"] + [_param("pretty")]
    return paths


def _list_definition(definition: str) -> str:
    candidate = definition + "List"
    return candidate if candidate in schemas.definitions() else META + "Status"


def _tag(group: str, version: str) -> str:
    name = "core" if not group else group.replace(".k8s.io", "").replace(".", "_")
    return f"{name}_{version}"


def _operation_id(res: _Resource) -> str:
    group = (
        "Core"
        if not res.group
        else "".join(
            part.capitalize() for part in res.group.replace(".k8s.io", "").replace("-", ".").split(".")
        )
    )
    scope = "Namespaced" if res.namespaced else ""
    return f"{group}{res.version.capitalize()}{scope}{res.kind}"


# --- lean documents -------------------------------------------------------------------------------

_PATCH_EXTENSIONS = ("x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy")
_GVK = "x-kubernetes-group-version-kind"
_SCALAR_TYPES = ("string", "integer", "number", "boolean")
_SMP = "application/strategic-merge-patch+json"
_SCHEMA_PREFIX = "#/components/schemas/"


class _PatchShapes:
    """The schemas reduced to what kubectl's strategic merge patch looks up (`PatchMetaFromOpenAPIV3`).

    kubectl walks a kind's schema only through `properties` (a field missing there is an error),
    reads the two patch extensions on the field's own schema, then resolves `allOf[0]`/`$ref` one hop;
    for a list it steps into `items` first. It looks a field up only when the field's value is an
    object or a list on both sides of a diff, and it steps into a list's elements only when the list
    merges (`x-kubernetes-patch-strategy: merge`). So a shape keeps, for every field that can hold an
    object or a list, the field itself with its patch extensions, and below it only what such a walk
    can reach: a struct's own object and list fields, and the elements of merging lists. Scalar
    fields, maps' value schemas (`additionalProperties`, never read) and the elements of atomic lists
    go; a struct with nothing left below it becomes `{}` in place instead of a `$ref`.
    """

    def __init__(self, full: dict[str, Any]) -> None:
        self.full = full
        self.shapes: dict[str, dict] = {}
        self._busy: set[str] = set()

    def _name(self, node: dict) -> str | None:
        if len(node.get("allOf") or ()) == 1:
            node = node["allOf"][0]
        ref = node.get("$ref")
        return ref[len(_SCHEMA_PREFIX) :] if isinstance(ref, str) and ref.startswith(_SCHEMA_PREFIX) else None

    def _target(self, node: dict) -> dict:
        for _ in range(8):
            name = self._name(node)
            if name is None or name not in self.full:
                break
            node = self.full[name]
        return node

    def _holds_values(self, node: Any) -> bool:
        """False for fields whose value is a scalar (they are never looked up)."""
        if not isinstance(node, dict):
            return False
        target = self._target(node)
        return not (
            target.get("type") in _SCALAR_TYPES
            and not any(k in target for k in ("properties", "items", "additionalProperties"))
            and not target.get("x-kubernetes-preserve-unknown-fields")
        )

    def component(self, name: str) -> dict:
        """The shape of a named schema; an empty dict when a walk finds nothing below it."""
        if name in self.shapes:
            return self.shapes[name]
        if name in self._busy:
            return {"properties": {}}  # recursive: assume something is there, refer to it by name
        self._busy.add(name)
        try:
            shape = self._struct(self.full[name])
        finally:
            self._busy.discard(name)
        self.shapes[name] = shape
        return shape

    def _struct(self, schema: dict) -> dict:
        props = {
            key: self._field(sub)
            for key, sub in (schema.get("properties") or {}).items()
            if self._holds_values(sub)
        }
        return {"properties": props} if props else {}

    def _value(self, node: dict) -> dict:
        """A struct reached by a lookup: a `$ref` to its shape, its shape inline, or `{}`."""
        name = self._name(node)
        if name is not None and name in self.full:
            return {"$ref": _SCHEMA_PREFIX + name} if self.component(name) else {}
        if "allOf" in node or "$ref" in node:
            return {}
        return self._struct(node)

    def _field(self, node: dict) -> dict:
        out = {key: node[key] for key in _PATCH_EXTENSIONS if key in node}
        if node.get("type") == "array" or "items" in node:
            strategies = str(node.get("x-kubernetes-patch-strategy", "")).split(",")
            items = node.get("items")
            if "merge" in strategies and isinstance(items, dict):
                shape = self._value(items)
                if shape:
                    out["items"] = shape
            return out
        shape = self._value(node)
        if "$ref" in shape and out:
            out["allOf"] = [shape]
        else:
            out.update(shape)
        return out


def _short_name(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = letters[rest] + name
    return name


def _rename_refs(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                _SCHEMA_PREFIX + names[v[len(_SCHEMA_PREFIX) :]]
                if k == "$ref" and isinstance(v, str)
                else _rename_refs(v, names)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rename_refs(v, names) for v in value]
    return value


def lean_document(doc: dict) -> dict:
    """The part of a group-version document that kubectl's apply, create, diff and replace read.

    kubectl parses the whole group-version document again for every object it applies: once to
    check that the server validates fields (`fieldValidation`), once to check that the kind takes
    strategic merge patches and once more to compute that patch. Its time goes into decoding every
    schema object of the document (about 1.5 us each, three times per object, plus the garbage
    collection of it), so what matters is how many JSON objects the document has, not its bytes.
    Those commands read only:
    - of each kind's PATCH operation: its `x-kubernetes-group-version-kind`, whether a query
      parameter named `fieldValidation` is listed, whether `requestBody.content` has
      `application/strategic-merge-patch+json`;
    - of the schemas: the kinds' schemas, found by `x-kubernetes-group-version-kind`, walked as
      `_PatchShapes` describes.
    So this form keeps exactly that, under short schema names, with identical schemas merged.
    Descriptions, scalar fields and every other operation are for humans and other clients:
    `kubectl explain` and every client that does not name a kubectl command get the full document.
    """
    paths = {}
    for path, ops in doc["paths"].items():
        patch = ops.get("patch")
        if patch is None or path.endswith(("/status", "/scale")):
            continue  # one PATCH operation per kind is what kubectl looks for
        content = patch["requestBody"]["content"]
        paths[path] = {
            "patch": {
                "parameters": [
                    {"name": p["name"], "in": "query"}
                    for p in patch["parameters"]
                    if p["in"] == "query" and p["name"] == "fieldValidation"
                ],
                # kubectl only asks whether strategic merge patch is among the types.
                "requestBody": {"content": {_SMP if _SMP in content else next(iter(content)): {}}},
                _GVK: patch[_GVK],
            }
        }
    full = doc["components"]["schemas"]
    shapes = _PatchShapes(full)
    # kubectl reads the schema of a kind only to compute a strategic merge patch for it.
    patched = {
        _gvk_key(ops["patch"][_GVK])
        for ops in paths.values()
        if _SMP in ops["patch"]["requestBody"]["content"]
    }
    roots = [
        name
        for name, schema in full.items()
        if any(_gvk_key(gvk) in patched for gvk in schema.get(_GVK) or ())
    ]
    for name in roots:
        shapes.component(name)
    lean = dict(shapes.shapes)
    for name in roots:
        lean[name] = {**lean[name], _GVK: full[name][_GVK]}
    # Keep what the kinds reach, merge identical schemas, and name them briefly.
    reachable: dict[str, None] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in reachable or name not in lean:
            continue
        reachable[name] = None
        stack.extend(_refs_of(lean[name]))
    names: dict[str, str] = {}
    by_body: dict[bytes, str] = {}
    # Identical bodies merge only when their own refs already agree, so iterate to a fixed point.
    for _ in range(8):
        changed = False
        by_body.clear()
        for name in sorted(reachable):
            body = orjson.dumps(
                _rename_refs(lean[name], {n: names.get(n, n) for n in reachable}), option=orjson.OPT_SORT_KEYS
            )
            if _GVK in lean[name]:
                body += name.encode()  # kinds stay distinct
            canonical = by_body.setdefault(body, names.get(name, name))
            if names.get(name, name) != canonical:
                names[name] = canonical
                changed = True
        if not changed:
            break
    canonical_names = sorted({names.get(n, n) for n in reachable})
    short = {name: _short_name(i) for i, name in enumerate(canonical_names)}
    final = {n: short[names.get(n, n)] for n in reachable}
    schemas_ = {short[name]: _rename_refs(lean[name], final) for name in canonical_names}
    schemas_ = _inline_small(schemas_, {final[name] for name in roots})
    return {
        "openapi": doc["openapi"],
        "info": doc["info"],
        "paths": paths,
        "components": {"schemas": schemas_},
    }


def _schema_nodes(schema: dict) -> int:
    """How many schema objects kubectl decodes for `schema` (each costs about the same)."""
    count = 1
    for sub in (schema.get("properties") or {}).values():
        count += _schema_nodes(sub)
    if isinstance(schema.get("items"), dict):
        count += _schema_nodes(schema["items"])
    for sub in schema.get("allOf") or ():
        count += _schema_nodes(sub)
    return count


def _inline_small(schemas_: dict[str, dict], roots: set[str]) -> dict[str, dict]:
    """Put a schema in place of its `$ref`s when that makes fewer objects to decode.

    A `$ref` is an object of its own plus a URL kubectl parses, about two objects' worth; a schema
    used once, or a small one used a few times, is cheaper written out where it is used. kubectl
    resolves `allOf[0]` and `$ref` one hop, so a field written out in place reads the same. Kinds
    stay named (kubectl finds them among the components), and so do schemas on a cycle.
    """
    uses: dict[str, int] = dict.fromkeys(schemas_, 0)
    for body in schemas_.values():
        for ref in _refs_of(body):
            uses[ref] = uses.get(ref, 0) + 1
    cyclic = {name for name in schemas_ if name in _reaches(schemas_, name)}
    inline: dict[str, dict] = {}
    for name in _topological(schemas_):  # a schema's size is known once what it refers to is decided
        if name in roots or name in cyclic or _reaches(schemas_, name) & cyclic:
            continue
        body = _replace_refs(schemas_[name], inline.get)
        size = _schema_nodes(body)
        if uses[name] * size <= uses[name] * 3 + size:
            inline[name] = body
    return {name: _replace_refs(body, inline.get) for name, body in schemas_.items() if name not in inline}


def _reaches(schemas_: dict[str, dict], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(_refs_of(schemas_[start]))
    while stack:
        name = stack.pop()
        if name in seen or name not in schemas_:
            continue
        seen.add(name)
        stack.extend(_refs_of(schemas_[name]))
    return seen


def _topological(schemas_: dict[str, dict]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if state.get(name):
            return
        state[name] = 1
        for ref in _refs_of(schemas_[name]):
            if ref in schemas_:
                visit(ref)
        state[name] = 2
        order.append(name)

    for name in sorted(schemas_):
        visit(name)
    return order


def _replace_refs(schema: dict, inline: Callable[[str], dict | None]) -> dict:
    """`schema` with every `$ref` that `inline` answers for written out in place."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _replace_refs(sub, inline) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _replace_refs(value, inline)
        elif key == "allOf" and len(value) == 1 and "$ref" in value[0]:
            body = inline(value[0]["$ref"][len(_SCHEMA_PREFIX) :])
            if body is None:
                out[key] = value
            else:
                out.update(body)
        elif key == "$ref":
            body = inline(value[len(_SCHEMA_PREFIX) :])
            if body is None:
                out[key] = value
            else:
                out.update(body)
        else:
            out[key] = value
    return out


def _gvk_key(gvk: dict) -> tuple[str, str, str]:
    return (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))


def _refs_of(value: Any) -> list[str]:
    found = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if key == "$ref" and isinstance(sub, str):
                    found.append(sub[len(_SCHEMA_PREFIX) :])
                else:
                    stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def wants_lean(request: web.Request) -> bool:
    """kubectl names its command in `Kubectl-Command`; every command but explain gets the lean form."""
    command = request.headers.get("Kubectl-Command", "")
    return bool(command) and not command.startswith("kubectl explain")


# --- the service ----------------------------------------------------------------------------------


class OpenAPIService:
    """Builds and caches the documents; one per application."""

    def __init__(self, registry_getter: Callable[[], Any]) -> None:
        self.registry_getter = registry_getter
        self.custom: dict[tuple[str, str, str], CustomKind] = {}
        self._generation = 0
        self._cache: dict[Any, Any] = {}

    # custom resources ------------------------------------------------------------------------

    def register_custom_schema(
        self,
        group: str,
        version: str,
        kind: str,
        plural: str,
        namespaced: bool,
        schema: dict | None,
        subresources: tuple[str, ...] = (),
        list_kind: str = "",
    ) -> None:
        """Serve a custom resource kind (one served version of a CRD) in both documents."""
        self.custom[(group, version, kind)] = CustomKind(
            group,
            version,
            kind,
            plural,
            namespaced,
            schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            tuple(subresources),
            list_kind or kind + "List",
        )
        self.invalidate()

    def unregister_custom_schema(self, group: str, version: str, kind: str) -> None:
        if self.custom.pop((group, version, kind), None) is not None:
            self.invalidate()

    def invalidate(self) -> None:
        """Forget generated documents (call after changing served resources in place)."""
        self._generation += 1
        self._cache.clear()

    # resources -------------------------------------------------------------------------------

    def _resources(self) -> list[_Resource]:
        registry = self.registry_getter()
        found: list[_Resource] = []
        seen: set[tuple[str, str, str]] = set()
        for info in getattr(registry, "resources", ()) or ():
            definition = (
                getattr(info, "definition", "")
                or schemas.definition_for_gvk(info.group, info.version, info.kind)
                or ""
            )
            key = (info.group, info.version, info.kind)
            if not definition or key in self.custom or key in seen:
                continue
            seen.add(key)
            subs = {
                name: (sub.group, sub.version, sub.kind, tuple(sub.verbs))
                for name, sub in (getattr(info, "subresources", None) or {}).items()
            }
            found.append(
                _Resource(
                    info.group,
                    info.version,
                    info.kind,
                    info.plural,
                    info.namespaced,
                    tuple(info.verbs),
                    definition,
                    subs,
                )
            )
        all_verbs = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
        for custom in self.custom.values():
            subs = {}
            if "status" in custom.subresources:
                subs["status"] = (custom.group, custom.version, custom.kind, ("get", "patch", "update"))
            if "scale" in custom.subresources:
                subs["scale"] = ("autoscaling", "v1", "Scale", ("get", "patch", "update"))
            found.append(
                _Resource(
                    custom.group,
                    custom.version,
                    custom.kind,
                    custom.plural,
                    custom.namespaced,
                    all_verbs,
                    custom.definition,
                    subs,
                    custom=True,
                )
            )
        return found

    def _fingerprint(self) -> tuple:
        registry = self.registry_getter()
        resources = getattr(registry, "resources", ()) or ()
        return (self._generation, id(registry), len(resources))

    def _cached(self, key: Any, build: Callable[[], Any]) -> Any:
        fingerprint = self._fingerprint()
        entry = self._cache.get(key)
        if entry is not None and entry[0] == fingerprint:
            return entry[1]
        value = build()
        self._cache[key] = (fingerprint, value)
        return value

    def group_versions(self) -> list[str]:
        return self._cached(
            "gvs",
            lambda: sorted(
                {_gv_path(r.group, r.version) for r in self._resources()},
                key=lambda p: (not p.startswith("api/"), p),
            ),
        )

    # schemas ---------------------------------------------------------------------------------

    def _custom_schemas(self, custom: CustomKind, prefix: str, v3: bool) -> dict[str, dict]:
        gvk = [{"group": custom.group, "version": custom.version, "kind": custom.kind}]
        body = _convert_structural(custom.schema, v3)
        body.setdefault("type", "object")
        props = dict(body.get("properties") or {})
        meta_ref = {"$ref": prefix + META + "ObjectMeta"}
        props["metadata"] = (
            {"allOf": [meta_ref], "description": "Standard object's metadata."}
            if v3
            else {**meta_ref, "description": "Standard object's metadata."}
        )
        for name, text in (
            ("apiVersion", "APIVersion defines the versioned schema of this representation."),
            ("kind", "Kind is a string value representing the REST resource this object represents."),
        ):
            props.setdefault(name, {"type": "string", "description": text})
        body["properties"] = props
        body["x-kubernetes-group-version-kind"] = gvk
        item_ref = {"$ref": prefix + custom.definition}
        list_schema = {
            "description": f"{custom.list_kind} is a list of {custom.kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": item_ref},
                "kind": {"type": "string"},
                "metadata": {"allOf": [{"$ref": prefix + META + "ListMeta"}]}
                if v3
                else {"$ref": prefix + META + "ListMeta"},
            },
            "x-kubernetes-group-version-kind": [{**gvk[0], "kind": custom.list_kind}],
        }
        return {custom.definition: body, custom.definition + "List": list_schema}

    def _schemas_for(self, resources: list[_Resource], prefix: str, v3: bool) -> dict[str, dict]:
        roots: list[str] = []
        customs: list[CustomKind] = []
        for res in resources:
            if res.custom:
                customs.append(self.custom[(res.group, res.version, res.kind)])
                roots += [META + "ObjectMeta", META + "ListMeta"]
            else:
                roots.append(res.definition)
                roots.append(res.definition + "List")
            for sgroup, sversion, skind, _ in res.subresources.values():
                sub = schemas.definition_for_gvk(sgroup, sversion, skind)
                if sub:
                    roots.append(sub)
        roots += [
            META + name for name in ("DeleteOptions", "Status", "Patch", "WatchEvent", "APIResourceList")
        ]
        names: dict[str, None] = {}
        for root in roots:
            if root in schemas.definitions():
                names.update(dict.fromkeys(schemas.reachable(root)))
        out = {name: _definition_schema(name, prefix, v3) for name in sorted(names)}
        for custom in customs:
            out.update(self._custom_schemas(custom, prefix, v3))
        return out

    # documents -------------------------------------------------------------------------------

    def _v3_dict(self, gv_path: str) -> dict | None:
        def build() -> dict | None:
            resources = [r for r in self._resources() if _gv_path(r.group, r.version) == gv_path]
            if not resources:
                return None
            prefix = "#/components/schemas/"

            def ref(name: str) -> dict:
                return {"$ref": prefix + name}

            paths: dict[str, dict] = {}
            for res in resources:
                paths.update(_operations(res, ref, True))
            return {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": schemas.KUBERNETES_VERSION},
                "paths": paths,
                "components": {
                    "schemas": self._schemas_for(resources, prefix, True),
                    "securitySchemes": {
                        "BearerToken": {
                            "type": "apiKey",
                            "name": "authorization",
                            "in": "header",
                            "description": "Bearer Token authentication",
                        }
                    },
                },
            }

        return self._cached(("v3dict", gv_path), build)

    def v3_document(self, gv_path: str, lean: bool = False) -> bytes | None:
        """The group-version document; `lean` drops what only humans read (see `lean_document`)."""

        def build() -> bytes | None:
            doc = self._v3_dict(gv_path)
            if doc is None:
                return None
            return orjson.dumps(lean_document(doc) if lean else doc)

        return self._cached(("v3", gv_path, lean), build)

    def v3_hash(self, gv_path: str, lean: bool = False) -> str | None:
        def build() -> str | None:
            doc = self.v3_document(gv_path, lean)
            return None if doc is None else hashlib.sha512(doc).hexdigest().upper()

        return self._cached(("v3hash", gv_path, lean), build)

    def v3_index(self, lean: bool = False) -> bytes:
        def build() -> bytes:
            paths = {}
            for gv in self.group_versions():
                digest = self.v3_hash(gv, lean)
                if digest:
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
            return orjson.dumps({"paths": paths})

        return self._cached(("v3index", lean), build)

    def v2_json(self) -> dict:
        def build() -> dict:
            resources = self._resources()
            prefix = "#/definitions/"

            def ref(name: str) -> dict:
                return {"$ref": prefix + name}

            paths: dict[str, dict] = {}
            for res in resources:
                for path, ops in _operations(res, ref, False).items():
                    paths[path] = {method: _v2_operation(operation) for method, operation in ops.items()}
            return {
                "swagger": "2.0",
                "info": {"title": "Kubernetes", "version": schemas.KUBERNETES_VERSION},
                "paths": paths,
                "definitions": self._schemas_for(resources, prefix, False),
                "securityDefinitions": {
                    "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}
                },
                "security": [{"BearerToken": []}],
            }

        return self._cached("v2", build)

    def v2_bytes(self, protobuf: bool) -> tuple[bytes, str]:
        def build_json() -> tuple[bytes, str]:
            data = orjson.dumps(self.v2_json())
            return data, '"' + hashlib.sha512(data).hexdigest().upper() + '"'

        def build_proto() -> tuple[bytes, str]:
            data = encode_v2_protobuf(self.v2_json())
            return data, '"' + hashlib.sha512(data).hexdigest().upper() + '"'

        return self._cached(("v2bytes", protobuf), build_proto if protobuf else build_json)


def _convert_structural(schema: Any, v3: bool) -> Any:
    """A CRD's openAPIV3Schema is already OpenAPI; only keep what the document needs."""
    if isinstance(schema, dict):
        return {k: _convert_structural(v, v3) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_convert_structural(v, v3) for v in schema]
    return schema


def _v2_operation(operation: dict) -> dict:
    out = {k: v for k, v in operation.items() if k not in ("requestBody", "responses", "parameters")}
    params = []
    for param in operation["parameters"]:
        v2 = {k: v for k, v in param.items() if k != "schema"}
        v2.update(param["schema"])
        params.append(v2)
    body = operation.get("requestBody")
    if body is not None:
        content = body["content"]
        params.insert(
            0,
            {
                "name": "body",
                "in": "body",
                "required": True,
                "schema": next(iter(content.values()))["schema"],
            },
        )
        out["consumes"] = list(content)
    out["parameters"] = params
    out["produces"] = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
    out["schemes"] = ["https"]
    out["responses"] = {
        code: {"description": resp["description"], "schema": resp["content"]["application/json"]["schema"]}
        for code, resp in operation["responses"].items()
    }
    return out


# --- gnostic protobuf (openapi_v2) ----------------------------------------------------------------

# Field numbers of the gnostic openapi_v2 messages this encoder writes (public OpenAPIv2.proto).
_GNOSTIC = {
    "Document": {
        "swagger": 1,
        "info": 2,
        "paths": 8,
        "definitions": 9,
        "security": 12,
        "security_definitions": 13,
        "vendor_extension": 16,
    },
    "Info": {"title": 1, "version": 2, "description": 3},
    "Paths": {"vendor_extension": 1, "path": 2},
    "NamedPathItem": {"name": 1, "value": 2},
    "PathItem": {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8, "parameters": 9},
    "Operation": {
        "tags": 1,
        "summary": 2,
        "description": 3,
        "operation_id": 5,
        "produces": 6,
        "consumes": 7,
        "parameters": 8,
        "responses": 9,
        "schemes": 10,
        "vendor_extension": 13,
    },
    "ParametersItem": {"parameter": 1},
    "Parameter": {"body_parameter": 1, "non_body_parameter": 2},
    "BodyParameter": {"description": 1, "name": 2, "in": 3, "required": 4, "schema": 5},
    "NonBodyParameter": {"query_parameter_sub_schema": 3, "path_parameter_sub_schema": 4},
    "QueryParameterSubSchema": {
        "required": 1,
        "in": 2,
        "description": 3,
        "name": 4,
        "type": 6,
        "unique_items": 20,
    },
    "PathParameterSubSchema": {
        "required": 1,
        "in": 2,
        "description": 3,
        "name": 4,
        "type": 5,
        "unique_items": 19,
    },
    "Responses": {"response_code": 1},
    "NamedResponseValue": {"name": 1, "value": 2},
    "ResponseValue": {"response": 1},
    "Response": {"description": 1, "schema": 2},
    "SchemaItem": {"schema": 1},
    "Definitions": {"additional_properties": 1},
    "NamedSchema": {"name": 1, "value": 2},
    "Schema": {
        "_ref": 1,
        "format": 2,
        "title": 3,
        "description": 4,
        "default": 5,
        "multiple_of": 6,
        "maximum": 7,
        "exclusive_maximum": 8,
        "minimum": 9,
        "exclusive_minimum": 10,
        "max_length": 11,
        "min_length": 12,
        "pattern": 13,
        "max_items": 14,
        "min_items": 15,
        "unique_items": 16,
        "max_properties": 17,
        "min_properties": 18,
        "required": 19,
        "enum": 20,
        "additional_properties": 21,
        "type": 22,
        "items": 23,
        "all_of": 24,
        "properties": 25,
        "read_only": 27,
        "example": 30,
        "vendor_extension": 31,
    },
    "AdditionalPropertiesItem": {"schema": 1, "boolean": 2},
    "TypeItem": {"value": 1},
    "ItemsItem": {"schema": 1},
    "Properties": {"additional_properties": 1},
    "NamedAny": {"name": 1, "value": 2},
    "Any": {"yaml": 2},
    "SecurityDefinitions": {"additional_properties": 1},
    "NamedSecurityDefinitionsItem": {"name": 1, "value": 2},
    "SecurityDefinitionsItem": {"api_key_security": 2},
    "ApiKeySecurity": {"type": 1, "name": 2, "in": 3, "description": 4},
    "SecurityRequirement": {"additional_properties": 1},
    "NamedStringArray": {"name": 1, "value": 2},
    "StringArray": {"value": 1},
}
_SCHEMA_NUMBERS = {"multiple_of", "maximum", "minimum"}
_SCHEMA_INTS = {"max_length", "min_length", "max_items", "min_items", "max_properties", "min_properties"}
_SCHEMA_BOOLS = {"exclusive_maximum", "exclusive_minimum", "unique_items", "read_only"}
_SCHEMA_KEYS = {
    "$ref": "_ref",
    "multipleOf": "multiple_of",
    "exclusiveMaximum": "exclusive_maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "maxLength": "max_length",
    "minLength": "min_length",
    "maxItems": "max_items",
    "minItems": "min_items",
    "uniqueItems": "unique_items",
    "maxProperties": "max_properties",
    "minProperties": "min_properties",
    "readOnly": "read_only",
}
_F = _GNOSTIC


def _any(value: Any) -> bytes:
    # gnostic keeps free-form values as YAML text; JSON is YAML.
    return pw.string_field(_F["Any"]["yaml"], orjson.dumps(value).decode() + "\n")


def _named_any(name: str, value: Any) -> bytes:
    return pw.string_field(_F["NamedAny"]["name"], name) + pw.length_delimited(
        _F["NamedAny"]["value"], _any(value)
    )


def _encode_schema(schema: dict) -> bytes:
    numbers = _F["Schema"]
    out = bytearray()
    extensions = []
    for key, value in schema.items():
        name = _SCHEMA_KEYS.get(key, key)
        if key.startswith("x-"):
            extensions.append((key, value))
        elif name in ("_ref", "format", "title", "description", "pattern") and isinstance(value, str):
            out += pw.string_field(numbers[name], value)
        elif name in ("default", "example"):
            out += pw.length_delimited(numbers[name], _any(value))
        elif name in _SCHEMA_NUMBERS and isinstance(value, int | float):
            out += pw.double_field(numbers[name], float(value))
        elif name in _SCHEMA_INTS and isinstance(value, int):
            out += pw.varint_field(numbers[name], value)
        elif name in _SCHEMA_BOOLS and isinstance(value, bool):
            out += pw.bool_field(numbers[name], value)
        elif name == "required" and isinstance(value, list):
            for item in value:
                out += pw.string_field(numbers["required"], item)
        elif name == "enum" and isinstance(value, list):
            for item in value:
                out += pw.length_delimited(numbers["enum"], _any(item))
        elif name == "additionalProperties":
            if isinstance(value, bool):
                payload = pw.bool_field(_F["AdditionalPropertiesItem"]["boolean"], value)
            else:
                payload = pw.length_delimited(_F["AdditionalPropertiesItem"]["schema"], _encode_schema(value))
            out += pw.length_delimited(numbers["additional_properties"], payload)
        elif name == "type":
            types = value if isinstance(value, list) else [value]
            payload = b"".join(pw.string_field(_F["TypeItem"]["value"], t) for t in types)
            out += pw.length_delimited(numbers["type"], payload)
        elif name == "items" and isinstance(value, dict):
            payload = pw.length_delimited(_F["ItemsItem"]["schema"], _encode_schema(value))
            out += pw.length_delimited(numbers["items"], payload)
        elif name == "allOf":
            for item in value:
                out += pw.length_delimited(numbers["all_of"], _encode_schema(item))
        elif name == "properties" and isinstance(value, dict):
            payload = b"".join(
                pw.length_delimited(
                    _F["Properties"]["additional_properties"],
                    pw.string_field(_F["NamedSchema"]["name"], prop)
                    + pw.length_delimited(_F["NamedSchema"]["value"], _encode_schema(sub)),
                )
                for prop, sub in value.items()
            )
            out += pw.length_delimited(numbers["properties"], payload)
    for key, value in extensions:
        out += pw.length_delimited(numbers["vendor_extension"], _named_any(key, value))
    return bytes(out)


def _encode_parameter(param: dict) -> bytes:
    if param.get("in") == "body":
        f = _F["BodyParameter"]
        body = (
            pw.string_field(f["name"], param["name"])
            + pw.string_field(f["in"], "body")
            + pw.bool_field(f["required"], bool(param.get("required")))
            + pw.length_delimited(f["schema"], _encode_schema(param["schema"]))
        )
        parameter = pw.length_delimited(_F["Parameter"]["body_parameter"], body)
    else:
        which = "path_parameter_sub_schema" if param["in"] == "path" else "query_parameter_sub_schema"
        f = _F["PathParameterSubSchema" if param["in"] == "path" else "QueryParameterSubSchema"]
        sub = b""
        if param.get("required"):
            sub += pw.bool_field(f["required"], True)
        sub += pw.string_field(f["in"], param["in"])
        if param.get("description"):
            sub += pw.string_field(f["description"], param["description"])
        sub += pw.string_field(f["name"], param["name"])
        sub += pw.string_field(f["type"], param.get("type", "string"))
        if param.get("uniqueItems"):
            sub += pw.bool_field(f["unique_items"], True)
        non_body = pw.length_delimited(_F["NonBodyParameter"][which], sub)
        parameter = pw.length_delimited(_F["Parameter"]["non_body_parameter"], non_body)
    return pw.length_delimited(_F["ParametersItem"]["parameter"], parameter)


def _encode_operation(operation: dict) -> bytes:
    f = _F["Operation"]
    out = bytearray()
    for item in operation.get("tags", ()):
        out += pw.string_field(f["tags"], item)
    if operation.get("description"):
        out += pw.string_field(f["description"], operation["description"])
    out += pw.string_field(f["operation_id"], operation.get("operationId", ""))
    for item in operation.get("produces", ()):
        out += pw.string_field(f["produces"], item)
    for item in operation.get("consumes", ()):
        out += pw.string_field(f["consumes"], item)
    for param in operation.get("parameters", ()):
        out += pw.length_delimited(f["parameters"], _encode_parameter(param))
    responses = b""
    for code, resp in operation.get("responses", {}).items():
        response = pw.string_field(_F["Response"]["description"], resp.get("description", ""))
        if "schema" in resp:
            response += pw.length_delimited(
                _F["Response"]["schema"],
                pw.length_delimited(_F["SchemaItem"]["schema"], _encode_schema(resp["schema"])),
            )
        value = pw.length_delimited(_F["ResponseValue"]["response"], response)
        responses += pw.length_delimited(
            _F["Responses"]["response_code"],
            pw.string_field(_F["NamedResponseValue"]["name"], code)
            + pw.length_delimited(_F["NamedResponseValue"]["value"], value),
        )
    out += pw.length_delimited(f["responses"], responses)
    for item in operation.get("schemes", ()):
        out += pw.string_field(f["schemes"], item)
    for key, value in operation.items():
        if key.startswith("x-"):
            out += pw.length_delimited(f["vendor_extension"], _named_any(key, value))
    return bytes(out)


def encode_v2_protobuf(doc: dict) -> bytes:
    """Encode a swagger 2.0 document (as built by `v2_json`) as a gnostic `openapi.v2.Document`."""
    f = _F["Document"]
    out = bytearray()
    out += pw.string_field(f["swagger"], doc.get("swagger", "2.0"))
    info = doc.get("info", {})
    out += pw.length_delimited(
        f["info"],
        pw.string_field(_F["Info"]["title"], info.get("title", ""))
        + pw.string_field(_F["Info"]["version"], info.get("version", "")),
    )
    paths = bytearray()
    methods = _F["PathItem"]
    for path, ops in doc.get("paths", {}).items():
        item = b"".join(
            pw.length_delimited(methods[method], _encode_operation(operation))
            for method, operation in ops.items()
            if method in methods
        )
        paths += pw.length_delimited(
            _F["Paths"]["path"],
            pw.string_field(_F["NamedPathItem"]["name"], path)
            + pw.length_delimited(_F["NamedPathItem"]["value"], item),
        )
    out += pw.length_delimited(f["paths"], bytes(paths))
    definitions = b"".join(
        pw.length_delimited(
            _F["Definitions"]["additional_properties"],
            pw.string_field(_F["NamedSchema"]["name"], name)
            + pw.length_delimited(_F["NamedSchema"]["value"], _encode_schema(schema)),
        )
        for name, schema in doc.get("definitions", {}).items()
    )
    out += pw.length_delimited(f["definitions"], definitions)
    for requirement in doc.get("security", ()):
        payload = b"".join(
            pw.length_delimited(
                _F["SecurityRequirement"]["additional_properties"],
                pw.string_field(_F["NamedStringArray"]["name"], name)
                + pw.length_delimited(
                    _F["NamedStringArray"]["value"],
                    b"".join(pw.string_field(_F["StringArray"]["value"], v) for v in values),
                ),
            )
            for name, values in requirement.items()
        )
        out += pw.length_delimited(f["security"], payload)
    security = b""
    for name, scheme in doc.get("securityDefinitions", {}).items():
        api_key = _F["ApiKeySecurity"]
        body = (
            pw.string_field(api_key["type"], scheme.get("type", "apiKey"))
            + pw.string_field(api_key["name"], scheme.get("name", ""))
            + pw.string_field(api_key["in"], scheme.get("in", "header"))
        )
        item = pw.length_delimited(_F["SecurityDefinitionsItem"]["api_key_security"], body)
        security += pw.length_delimited(
            _F["SecurityDefinitions"]["additional_properties"],
            pw.string_field(_F["NamedSecurityDefinitionsItem"]["name"], name)
            + pw.length_delimited(_F["NamedSecurityDefinitionsItem"]["value"], item),
        )
    if security:
        out += pw.length_delimited(f["security_definitions"], security)
    return bytes(out)


# --- HTTP ---------------------------------------------------------------------------------------

_SERVICE_KEY = web.AppKey("pinnace_openapi", OpenAPIService)


def service(app: web.Application) -> OpenAPIService:
    """The OpenAPIService of an application (to register custom resource schemas)."""
    return app[_SERVICE_KEY]


def register_custom_schema(app: web.Application, *args: Any, **kwargs: Any) -> None:
    """Shortcut for `service(app).register_custom_schema(...)`."""
    service(app).register_custom_schema(*args, **kwargs)


def unregister_custom_schema(app: web.Application, group: str, version: str, kind: str) -> None:
    service(app).unregister_custom_schema(group, version, kind)


def _not_modified(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    return bool(header) and (etag in [tag.strip() for tag in header.split(",")] or header.strip() == "*")


async def _in_thread(func: Callable[[], Any]) -> Any:
    # Building a document takes tens to hundreds of milliseconds the first time: keep the loop free.
    return await asyncio.get_running_loop().run_in_executor(None, func)


def add_routes(app: web.Application, registry_getter: Callable[[], Any]) -> OpenAPIService:
    """Serve `/openapi/v3`, `/openapi/v3/<gv>` and `/openapi/v2` from the resources `registry_getter()`
    returns (an object with `.resources`, each like `pinnace.api.kinds.ResourceInfo`)."""
    svc = OpenAPIService(registry_getter)
    app[_SERVICE_KEY] = svc

    async def v3_index(request: web.Request) -> web.Response:
        lean = wants_lean(request)
        body = await _in_thread(lambda: svc.v3_index(lean))
        etag = '"' + hashlib.sha512(body).hexdigest().upper() + '"'
        headers = {"Cache-Control": "no-cache, private", "Etag": etag, "Vary": "Accept, Kubectl-Command"}
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def v3_document(request: web.Request) -> web.Response:
        gv = request.match_info["gv"].strip("/")
        full = await _in_thread(lambda: svc.v3_hash(gv))
        if full is None:
            return _not_found(request)
        lean_digest = await _in_thread(lambda: svc.v3_hash(gv, True))
        asked = request.query.get("hash")
        # A hash names its variant; without one the request's client decides.
        lean = asked == lean_digest if asked in (full, lean_digest) else wants_lean(request)
        digest = lean_digest if lean else full
        etag = f'"{digest}"'
        if asked is not None and asked != digest:
            # An old hash: send the client to the current document, as kube-apiserver does.
            raise web.HTTPMovedPermanently(location=f"/openapi/v3/{gv}?hash={digest}")
        if asked is not None:
            headers = {"Cache-Control": "public, immutable", "Etag": etag, "Expires": _far_future()}
        else:
            headers = {"Cache-Control": "no-cache, private", "Etag": etag}
        headers["Vary"] = "Accept, Kubectl-Command"
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        body = svc.v3_document(gv, lean)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def v2(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        protobuf = V2_PROTOBUF in accept or V2_PROTOBUF_ALT in accept
        body, etag = await _in_thread(lambda: svc.v2_bytes(protobuf))
        headers = {"Etag": etag, "Vary": "Accept", "Cache-Control": "no-cache, private"}
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        # Answered with the dotted form even when the "@" form was asked for: Go's mime parser,
        # which kubectl applies to the response, rejects "@" (kube-openapi does the same).
        content_type = V2_PROTOBUF_ALT if protobuf else "application/json"
        response = web.Response(body=body, headers=headers)
        response.headers["Content-Type"] = content_type
        return response

    app.router.add_get("/openapi/v3", v3_index)
    app.router.add_get("/openapi/v3/", v3_index)
    app.router.add_get(r"/openapi/v3/{gv:[\s\S]+}", v3_document)  # any character, newlines too, as above
    app.router.add_get("/openapi/v2", v2)
    return svc


def _far_future() -> str:
    import email.utils
    import time

    return email.utils.formatdate(time.time() + 365 * 86400, usegmt=True)


def _not_found(request: web.Request) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404,
    }
    return web.Response(status=404, body=orjson.dumps(body) + b"\n", content_type="application/json")
