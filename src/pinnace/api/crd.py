"""CustomResourceDefinitions (apiextensions.k8s.io/v1): pure functions the API server serves a CRD with.

What Kubernetes does for a CRD, and pinnace with these helpers:
- `accepted_status(crd)`: the status a CRD gets once its names are checked: `acceptedNames`,
  `storedVersions` and the `NamesAccepted` and `Established` conditions;
- `resource_infos(crd)`: one `ResourceInfo` per served version (plural, scope, verbs, `status`/`scale`
  subresources), for the kind registry, discovery and OpenAPI (`openapi_registrations(crd)` gives the
  keyword arguments of `OpenAPIService.register_custom_schema`);
- `schema_node(crd, version)`: a `SchemaNode` over the version's structural schema, so strategic merge
  patch (refused anyway with 415 for custom resources), JSON/merge patch and server-side apply
  (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`) treat lists as declared;
- `prune(obj, schema)`: drops fields the schema does not declare, unless
  `x-kubernetes-preserve-unknown-fields` (returns the dropped paths for `fieldValidation` Warn/Strict);
- `apply_defaults(obj, schema)`: fills `default`s of absent properties, as the schema nests them;
- `validate(obj, schema)`: structural-schema validation with Kubernetes-shaped causes (jsonschema-rs
  after translating `nullable`, `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`);
- `printer_columns(crd, version)` and `row_cells(obj, columns)`: `additionalPrinterColumns` for Tables
  (simple JSONPath: `.spec.replicas`, `.status.conditions[0].type`, `.metadata.labels.app`).
Conversion between versions is strategy None: only `apiVersion` changes.
"""

from __future__ import annotations

import copy
import datetime
import functools
import re
from typing import Any

import orjson

from pinnace.api.kinds import ResourceInfo, SubresourceInfo
from pinnace.api.schemas import SchemaNode
from pinnace.api.tables import human_duration

_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_TOP_LEVEL = ("apiVersion", "kind", "metadata")


def _spec(crd: dict) -> dict:
    return crd.get("spec") or {}


def versions(crd: dict) -> list[dict]:
    return [v for v in _spec(crd).get("versions") or () if isinstance(v, dict)]


def served_versions(crd: dict) -> list[str]:
    return [v["name"] for v in versions(crd) if v.get("served")]


def storage_version(crd: dict) -> str | None:
    return next((v["name"] for v in versions(crd) if v.get("storage")), None)


def version_entry(crd: dict, version: str) -> dict | None:
    return next((v for v in versions(crd) if v.get("name") == version), None)


def version_schema(crd: dict, version: str) -> dict:
    """The version's openAPIV3Schema (an object that keeps everything when none is given)."""
    entry = version_entry(crd, version) or {}
    schema = (entry.get("schema") or {}).get("openAPIV3Schema")
    return (
        schema
        if isinstance(schema, dict)
        else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )


def schema_node(crd: dict, version: str) -> SchemaNode:
    return SchemaNode(version_schema(crd, version), None)


# --- names, status and resources -----------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def names_problems(crd: dict) -> list[str]:
    """Why a CRD's names are not acceptable (empty when they are)."""
    spec = _spec(crd)
    names = spec.get("names") or {}
    problems = []
    plural, group = names.get("plural", ""), spec.get("group", "")
    if not plural or not names.get("kind"):
        problems.append("spec.names.plural and spec.names.kind are required")
    expected = f"{plural}.{group}"
    if crd.get("metadata", {}).get("name") != expected:
        problems.append(
            f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group ({expected})'
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append("spec.scope: Unsupported value: must be Namespaced or Cluster")
    storage = [v for v in versions(crd) if v.get("storage")]
    if len(storage) != 1:
        problems.append(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
        )
    return problems


def accepted_status(crd: dict, now: str | None = None) -> dict:
    """The status Kubernetes gives an accepted CRD (NamesAccepted and Established, both True)."""
    stamp = now or _now()
    names = dict(_spec(crd).get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    previous = (crd.get("status") or {}).get("storedVersions") or []
    stored = list(previous)
    storage = storage_version(crd)
    if storage and storage not in stored:
        stored.append(storage)
    return {
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    }


def resource_infos(crd: dict) -> list[ResourceInfo]:
    """One ResourceInfo per served version of the CRD."""
    spec = _spec(crd)
    names = spec.get("names") or {}
    group = spec.get("group", "")
    infos = []
    for entry in versions(crd):
        if not entry.get("served"):
            continue
        subresources: dict[str, SubresourceInfo] = {}
        declared = entry.get("subresources") or {}
        if "status" in declared:
            subresources["status"] = SubresourceInfo(
                "status", group, entry["name"], names.get("kind", ""), ("get", "patch", "update")
            )
        if "scale" in declared:
            subresources["scale"] = SubresourceInfo(
                "scale", "autoscaling", "v1", "Scale", ("get", "patch", "update")
            )
        infos.append(
            ResourceInfo(
                group=group,
                version=entry["name"],
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                verbs=_VERBS,
                subresources=subresources,
                definition="",
            )
        )
    return infos


def openapi_registrations(crd: dict) -> list[dict]:
    """Keyword arguments for `OpenAPIService.register_custom_schema`, one per served version."""
    spec = _spec(crd)
    names = spec.get("names") or {}
    out = []
    for entry in versions(crd):
        if not entry.get("served"):
            continue
        out.append(
            {
                "group": spec.get("group", ""),
                "version": entry["name"],
                "kind": names.get("kind", ""),
                "plural": names.get("plural", ""),
                "namespaced": spec.get("scope") == "Namespaced",
                "schema": version_schema(crd, entry["name"]),
                "subresources": tuple(entry.get("subresources") or ()),
                "list_kind": names.get("listKind") or names.get("kind", "") + "List",
            }
        )
    return out


# --- pruning and defaulting ----------------------------------------------------------------------


def prune(obj: dict, schema: dict) -> list[str]:
    """Remove fields the structural schema does not declare; returns their paths (`spec.foo`).

    `apiVersion`, `kind` and `metadata` are always kept at the top (metadata is ObjectMeta's business).
    """
    dropped: list[str] = []
    _prune(obj, schema, "", dropped, top=True)
    return dropped


def _prune(value: Any, schema: dict, path: str, dropped: list[str], top: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key in list(value):
            child_path = f"{path}.{key}" if path else key
            if top and key in _TOP_LEVEL:
                continue
            if key in props:
                _prune(value[key], props[key], child_path, dropped)
            elif isinstance(extra, dict):
                _prune(value[key], extra, child_path, dropped)
            elif not keep_unknown and (props or extra is False or schema.get("type") == "object"):
                del value[key]
                dropped.append(child_path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(item, schema["items"], f"{path}[{index}]", dropped)


def apply_defaults(obj: Any, schema: dict) -> None:
    """Set each absent property that has a `default`, at every level present in `obj`."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                if key not in (schema.get("properties") or {}):
                    apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


# --- validation ----------------------------------------------------------------------------------

_DROP_KEYS = {
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
    "externalDocs",
    "example",
}


def _to_json_schema(schema: Any, top: bool = False) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema draft 2020-12 for jsonschema-rs."""
    if isinstance(schema, list):
        return [_to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or key in (
            "nullable",
            "x-kubernetes-int-or-string",
            "x-kubernetes-preserve-unknown-fields",
        ):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
            if top:
                for name in _TOP_LEVEL:
                    out[key].pop(name, None)  # the API server validates these itself
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_to_json_schema(item) for item in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    import jsonschema_rs

    schema = _to_json_schema(orjson.loads(schema_json), top=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return jsonschema_rs.Draft202012Validator(schema)


def validate(obj: dict, schema: dict) -> list[dict]:
    """Causes (`{reason, message, field}`) for every place `obj` breaks the schema."""
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    causes = []
    for error in validator.iter_errors(obj):
        field = _field_path(list(error.instance_path))
        kind = type(error.kind).__name__ if hasattr(error, "kind") else ""
        if "Required" in kind or "is a required property" in error.message:
            reason, message = "FieldValueRequired", "Required value"
            missing = re.search(r'"([^"]+)" is a required property', error.message)
            if missing:
                field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        else:
            reason, message = "FieldValueInvalid", f"Invalid value: {error.message}"
        causes.append({"reason": reason, "message": message, "field": field})
    return causes


def _field_path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- printer columns -----------------------------------------------------------------------------


def printer_columns(crd: dict, version: str) -> list[dict]:
    """Table columns: Name, then `additionalPrinterColumns` (or Age when there are none)."""
    entry = version_entry(crd, version) or {}
    columns = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name must be unique within a namespace.",
            "priority": 0,
            "jsonPath": ".metadata.name",
        }
    ]
    declared = entry.get("additionalPrinterColumns") or []
    if not declared:
        declared = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    for column in declared:
        columns.append(
            {
                "name": column.get("name", ""),
                "type": column.get("type", "string"),
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": column.get("priority", 0),
                "jsonPath": column.get("jsonPath", ""),
            }
        )
    return columns


_PATH_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]")


def json_path(obj: Any, path: str) -> Any:
    """The value a simple JSONPath (`.a.b[0].c`, `{.a.b}`) names, or None."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    node = obj
    for match in _PATH_PART.finditer(path):
        name, index, quoted = match.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            node = node[int(index)]
        else:
            if not isinstance(node, dict):
                return None
            node = node.get(name if name is not None else quoted)
        if node is None:
            return None
    return node


def row_cells(obj: dict, columns: list[dict], now: datetime.datetime | None = None) -> list[Any]:
    """The Table cells of one object, as kube-apiserver's CRD table convertor renders them.

    kubectl prints cells as they come, so the server does the formatting: `date` columns become
    ages ("5m"), `integer` and `number` cells are numbers, a value of another type than its column's
    is empty (`<none>`), and `string` columns print what the JSONPath finds (objects and lists as
    compact JSON, as Go's JSONPath printer does).
    """
    return [_cell(column["type"], json_path(obj, column["jsonPath"]), now) for column in columns]


def _cell(column_type: str, value: Any, now: datetime.datetime | None) -> Any:
    if value is None:
        return None
    if column_type == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, dict | list):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        return orjson.dumps(value).decode()  # numbers and booleans as JSON writes them
    if column_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        try:
            when = datetime.datetime.fromisoformat(value)
        except ValueError:
            return "<invalid>"
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = ((now or datetime.datetime.now(datetime.UTC)) - when).total_seconds()
        return human_duration(seconds)
    return None
