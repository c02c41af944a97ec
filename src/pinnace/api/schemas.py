"""The Kubernetes v1.32 OpenAPI schemas, from the `kubernetes-validate` package.

Every schema fact pinnace uses (fields, types, defaults, patch strategies, list-map keys, the
group/version/kind of each definition) comes from here, never from hand-written field lists.

`kubernetes-validate` ships each version twice: `v1.32.0-local` and `v1.32.0-local-strict`; the strict
flavour sets `additionalProperties: false` on every object, which is how unknown fields are found
(`fieldValidation=Strict`). Both carry the Kubernetes extensions (`x-kubernetes-patch-merge-key`,
`x-kubernetes-patch-strategy`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
`x-kubernetes-group-version-kind`).

Usage::

    from pinnace.api import schemas

    name = schemas.definition_for_gvk("apps", "v1", "Deployment")  # "io.k8s.api.apps.v1.Deployment"
    schemas.definition(name)                    # the raw definition (refs are "#/$defs/<name>")
    schema = schemas.strict_schema_for_gvk("apps", "v1", "Deployment")  # self-contained, for jsonschema-rs
    validator = schemas.validator_for_gvk("", "v1", "Pod", strict=True)  # compiled once, cached
    errors = list(validator.iter_errors(obj))

    node = schemas.walker_for_gvk("", "v1", "Pod")       # walk by field path for SMP / SSA
    containers = node.path("spec", "containers")
    containers.patch_strategy, containers.merge_key  # "merge", "name"
    containers.list_type, containers.list_map_keys   # "map", ["name"]
    containers.items().field("ports").merge_key      # "containerPort"

Everything loads lazily on first use and is cached for the life of the process: the definitions file
is parsed once per flavour, each self-contained schema is built once, each validator compiled once.
A self-contained schema embeds only the definitions reachable from its root, which keeps
compilation fast (a Pod needs about 90 of the 638 definitions).

Custom resources (CRDs) have schemas without `$ref`s; `SchemaNode(crd_schema)` walks them the same way.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

KUBERNETES_VERSION = "v1.32.0"

_REF_PREFIX = "#/$defs/"
_lock = threading.Lock()


def _schema_dir(strict: bool) -> str:
    import kubernetes_validate

    base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    return os.path.join(base, f"{KUBERNETES_VERSION}-local" + ("-strict" if strict else ""))


def _rewrite_refs(value: Any) -> Any:
    """Point every `$ref` at the embedded `#/$defs/<name>`.

    Only string values of `$ref` keys are refs: JSONSchemaProps has a *property* named `$ref`, whose
    value is a schema object, and that must be left alone.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                out[key] = _REF_PREFIX + item.rsplit("/", 1)[-1] if "#/" in item else item
            else:
                out[key] = _rewrite_refs(item)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(item) for item in value]
    return value


@functools.cache
def definitions(strict: bool = False) -> dict[str, dict]:
    """All definitions by name (`io.k8s.api.core.v1.Pod`, ...), refs as `#/$defs/<name>`."""
    with _lock:
        with open(os.path.join(_schema_dir(strict), "_definitions.json"), "rb") as f:
            raw = json.load(f)
        return _rewrite_refs(raw["$defs"])


def definition(name: str, strict: bool = False) -> dict:
    """One definition by its OpenAPI name; KeyError when unknown."""
    return definitions(strict)[name]


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions(False).items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            key = (gvk.get("group", ""), gvk["version"], gvk["kind"])
            # DeleteOptions, WatchEvent, ... are registered under every group; keep the first.
            index.setdefault(key, name)
    return index


def definition_for_gvk(group: str, version: str, kind: str) -> str | None:
    """The definition name of a group/version/kind (core group is ""), or None."""
    return _gvk_index().get((group, version, kind))


def gvks() -> list[tuple[str, str, str]]:
    """Every (group, version, kind) that has a definition."""
    return list(_gvk_index())


def reachable(name: str, strict: bool = False) -> list[str]:
    """Names of `name` and every definition it refers to, transitively."""
    return list(_reachable(name, strict))


@functools.cache
def _reachable(name: str, strict: bool) -> tuple[str, ...]:
    defs = definitions(strict)
    seen: dict[str, None] = {}
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen or current not in defs:
            continue
        seen[current] = None
        stack.extend(_refs_in(defs[current]))
    return tuple(seen)


def _refs_in(value: Any) -> list[str]:
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if key == "$ref" and isinstance(sub, str):
                    if sub.startswith(_REF_PREFIX):
                        found.append(sub[len(_REF_PREFIX) :])
                else:
                    stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
    return found


@functools.cache
def schema_for_definition(name: str, strict: bool = False) -> dict:
    """A self-contained JSON schema (draft 2020-12) for one definition."""
    defs = definitions(strict)
    root = dict(defs[name])
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["$defs"] = {n: defs[n] for n in _reachable(name, strict)}
    return root


def schema_for_gvk(group: str, version: str, kind: str) -> dict | None:
    """Self-contained schema that tolerates unknown fields (fieldValidation Ignore/Warn)."""
    name = definition_for_gvk(group, version, kind)
    return None if name is None else schema_for_definition(name, False)


def strict_schema_for_gvk(group: str, version: str, kind: str) -> dict | None:
    """Self-contained schema with `additionalProperties: false` everywhere (unknown fields fail)."""
    name = definition_for_gvk(group, version, kind)
    return None if name is None else schema_for_definition(name, True)


@functools.cache
def _validator(name: str, strict: bool) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(schema_for_definition(name, strict))


def validator_for_gvk(group: str, version: str, kind: str, strict: bool = False) -> Any | None:
    """A compiled, cached `jsonschema_rs` validator for the kind, or None when the kind is unknown."""
    name = definition_for_gvk(group, version, kind)
    return None if name is None else _validator(name, strict)


# --- walking into a schema by field path (strategic merge patch, server-side apply) -----------------


@dataclass(frozen=True, eq=False)
class SchemaNode:
    """A position in a schema: what a field at this position is, and how lists/maps there merge.

    `schema` is the schema at this position with `$ref`s left in place; `defs` resolves them. The
    Kubernetes extensions may sit beside a `$ref` (`strategy: {$ref, x-kubernetes-patch-strategy:
    retainKeys}`) or inside the referenced definition, so lookups consult both. An empty node (schema
    `{}`) stands for "unknown": everything merges as a plain map or replaces atomically, like a
    Kubernetes server does for unstructured data.
    """

    schema: dict
    defs: dict | None = None

    def _resolved(self) -> dict:
        schema = self.schema
        for _ in range(16):  # refs chain at most a few deep; the bound guards against cycles
            ref = schema.get("$ref")
            if not isinstance(ref, str) or self.defs is None:
                break
            target = self.defs.get(ref[len(_REF_PREFIX) :]) if ref.startswith(_REF_PREFIX) else None
            if target is None:
                break
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        for combinator in ("allOf",):
            parts = schema.get(combinator)
            if isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], dict):
                inner = SchemaNode(parts[0], self.defs)._resolved()
                schema = {**inner, **{k: v for k, v in schema.items() if k != combinator}}
        return schema

    @functools.cached_property
    def resolved(self) -> dict:
        return self._resolved()

    def _child(self, schema: Any) -> SchemaNode:
        return SchemaNode(schema if isinstance(schema, dict) else {}, self.defs)

    @functools.cached_property
    def _children(self) -> dict[str, SchemaNode]:
        # Nodes are walked on every write (managed fields, patches); keeping the children means each
        # position's `$ref`s are resolved once per process, not once per request. Keys are property
        # names, plus "\0items" and "\0values" (one node for any key of a free-key map, so arbitrary
        # label names never grow this).
        return {}

    @property
    def known(self) -> bool:
        return bool(self.schema)

    def field(self, name: str) -> SchemaNode:
        """The schema of property `name` of an object (or of any value of a map)."""
        children = self._children
        node = children.get(name)
        if node is not None:
            return node
        resolved = self.resolved
        props = resolved.get("properties")
        if isinstance(props, dict) and name in props:
            node = children[name] = self._child(props[name])
            return node
        node = children.get("\0values")
        if node is None:
            extra = resolved.get("additionalProperties")
            node = children["\0values"] = self._child(extra if isinstance(extra, dict) else {})
        return node

    def items(self) -> SchemaNode:
        """The schema of the elements of a list."""
        node = self._children.get("\0items")
        if node is None:
            node = self._children["\0items"] = self._child(self.resolved.get("items"))
        return node

    def path(self, *names: str) -> SchemaNode:
        """Walk object fields by name; `[]` steps into list items."""
        node = self
        for name in names:
            node = node.items() if name == "[]" else node.field(name)
        return node

    @property
    def types(self) -> set[str]:
        kind = self.resolved.get("type")
        if isinstance(kind, str):
            return {kind}
        if isinstance(kind, list):
            return set(kind)
        return set()

    @property
    def is_list(self) -> bool:
        return "array" in self.types or "items" in self.resolved

    @property
    def is_map(self) -> bool:
        """A map with free keys (labels, resources.limits), as opposed to a struct."""
        resolved = self.resolved
        return isinstance(resolved.get("additionalProperties"), dict) and not resolved.get("properties")

    @property
    def is_struct(self) -> bool:
        return bool(self.resolved.get("properties"))

    @property
    def preserves_unknown_fields(self) -> bool:
        return bool(self.resolved.get("x-kubernetes-preserve-unknown-fields"))

    @property
    def patch_strategy(self) -> str | None:
        """`merge`, `retainKeys`, `merge,retainKeys`, `replace` or None (Kubernetes' default)."""
        value = self.schema.get("x-kubernetes-patch-strategy") or self.resolved.get(
            "x-kubernetes-patch-strategy"
        )
        return value if isinstance(value, str) else None

    @property
    def patch_strategies(self) -> set[str]:
        return set((self.patch_strategy or "").split(",")) - {""}

    @property
    def merge_key(self) -> str | None:
        value = self.schema.get("x-kubernetes-patch-merge-key") or self.resolved.get(
            "x-kubernetes-patch-merge-key"
        )
        return value if isinstance(value, str) else None

    @property
    def list_type(self) -> str | None:
        """`atomic`, `set`, `map` or None (`x-kubernetes-list-type`)."""
        value = self.schema.get("x-kubernetes-list-type") or self.resolved.get("x-kubernetes-list-type")
        return value if isinstance(value, str) else None

    @property
    def list_map_keys(self) -> list[str]:
        value = self.schema.get("x-kubernetes-list-map-keys") or self.resolved.get(
            "x-kubernetes-list-map-keys"
        )
        return list(value) if isinstance(value, list) else []

    @property
    def map_type(self) -> str | None:
        """`atomic`, `granular` or None (`x-kubernetes-map-type`)."""
        value = self.schema.get("x-kubernetes-map-type") or self.resolved.get("x-kubernetes-map-type")
        return value if isinstance(value, str) else None


EMPTY = SchemaNode({}, None)


@functools.cache
def walker(name: str) -> SchemaNode:
    """A SchemaNode at the root of a named definition (one per process: its children are kept)."""
    defs = definitions(False)
    return SchemaNode({"$ref": _REF_PREFIX + name}, defs) if name in defs else EMPTY


def walker_for_gvk(group: str, version: str, kind: str) -> SchemaNode:
    """A SchemaNode at the root of a kind; an empty (unknown) node when the kind has no schema."""
    name = definition_for_gvk(group, version, kind)
    return EMPTY if name is None else walker(name)


def walk(group: str, version: str, kind: str, path: list[str] | tuple[str, ...]) -> SchemaNode:
    """Shortcut: `walker_for_gvk(...).path(*path)`."""
    return walker_for_gvk(group, version, kind).path(*path)
