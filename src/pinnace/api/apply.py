"""Server-side apply and field ownership (`metadata.managedFields`), as Kubernetes does it.

Every object records which manager owns which fields, per operation: `Apply` entries come from
server-side apply (`application/apply-patch+yaml`), `Update` entries from create, update and the
other patch types. A field set is a set of paths; a path is a tuple of FieldsV1 elements:

- `f:<name>`    a field of a struct or a key of a map;
- `k:<json>`    an element of an associative list (`x-kubernetes-list-type: map`, or a strategic
                merge key), named by its key fields, e.g. `k:{"containerPort":80,"protocol":"TCP"}`;
- `v:<json>`    an element of a set (`x-kubernetes-list-type: set`), named by its value;
- `i:<n>`       not produced here (Kubernetes uses it only for untyped lists).

On the wire the set is the FieldsV1 tree Kubernetes writes: `{"f:spec":{"f:containers":
{"k:{\"name\":\"app\"}":{".":{},"f:image":{}}}}}`, where `"."` marks a node that is itself owned
and also has owned children.

Apply (`server_side_apply`):
1. the applied configuration's field set becomes the manager's `Apply` entry;
2. a field that another manager owns and whose value the applied configuration would change is a
   conflict: 409 with one `FieldManagerConflict` cause per field, unless `force`, which moves
   ownership to the applier; equal values are simply co-owned;
3. the configuration is merged into the live object (associative lists by key, sets by value,
   atomic values replaced);
4. fields the manager applied before but no longer applies, and that nobody else owns, are
   removed from the object.

Update (`update_managed_fields`): the fields an ordinary write changed move to the writing manager
(`Update` entry), away from everyone else; fields the write removed leave every set.

Not tracked, like Kubernetes: `apiVersion`, `kind`, `metadata` other than labels, annotations,
finalizers and ownerReferences, and `status` on the main resource (the status subresource tracks
only `status`). Where pinnace differs: list order after merging keeps the live order and appends
new elements; Kubernetes' exact "." markers on Update entries depend on Go pointer types, which
the schemas do not carry, so only maps and list elements get them.
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from pinnace.api import schemas
from pinnace.api.meta import same_but_metadata
from pinnace.api.patch import BadRequest, Conflict, _deepcopy
from pinnace.api.schemas import SchemaNode

Path = tuple[str, ...]
MISSING: Any = object()

_TRACKED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
# List-map key fields that Kubernetes defaults before keys are compared (ports' protocol).
_KEY_DEFAULTS = {"protocol": "TCP"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- list identity ---------------------------------------------------------------------------------


def _list_kind(node: SchemaNode) -> tuple[str, list[str]]:
    """("map", keys) for associative lists, ("set", []) for sets, ("atomic", []) otherwise."""
    list_type = node.list_type
    keys = node.list_map_keys
    if list_type == "map" and keys:
        return "map", keys
    if list_type == "set":
        return "set", []
    if list_type is None and node.merge_key and "merge" in node.patch_strategies:
        return "map", [node.merge_key]
    if list_type is None and "merge" in node.patch_strategies:
        return "set", []
    return "atomic", []


def _key_element(item: Any, keys: list[str]) -> str | None:
    if not isinstance(item, dict):
        return None
    parts = {}
    for key in keys:
        if key in item:
            parts[key] = item[key]
        elif key in _KEY_DEFAULTS:
            parts[key] = _KEY_DEFAULTS[key]
    if not parts:
        return None
    return "k:" + orjson.dumps(parts, option=orjson.OPT_SORT_KEYS).decode()


def _value_element(item: Any) -> str:
    return "v:" + orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()


def _identify(items: list, kind: str, keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        element = _key_element(item, keys) if kind == "map" else _value_element(item)
        if element is not None:
            out.setdefault(element, item)
    return out


# --- field sets ------------------------------------------------------------------------------------


def fields_of(value: Any, node: SchemaNode, prefix: Path = (), *, update: bool = False) -> set[Path]:
    """The field set of a (partial) object: its leaves, list elements and empty containers.

    With `update=True` free-key maps are themselves members too (how Update entries look).
    """
    out: set[Path] = set()
    _collect(value, node, prefix, out, update)
    return out


def _collect(value: Any, node: SchemaNode, prefix: Path, out: set[Path], update: bool) -> None:
    if isinstance(value, dict):
        if not value or node.map_type == "atomic":
            out.add(prefix)
            return
        if update and prefix and node.is_map:
            out.add(prefix)
        for key, item in value.items():
            _collect(item, node.field(key), (*prefix, "f:" + key), out, update)
        return
    if isinstance(value, list):
        kind, keys = _list_kind(node)
        identified = _identify(value, kind, keys) if kind != "atomic" else {}
        if kind == "atomic" or not value or len(identified) != len(value):
            out.add(prefix)  # atomic, or elements without their keys: owned as a whole
            return
        items_node = node.items()
        for element, item in identified.items():
            path = (*prefix, element)
            out.add(path)
            if kind == "map":
                for key, sub in item.items():
                    _collect(sub, items_node.field(key), (*path, "f:" + key), out, update)
        return
    out.add(prefix)


def to_fields_v1(paths: set[Path]) -> dict:
    """Encode a field set as the FieldsV1 tree."""
    root: dict = {}
    members: set[int] = set()  # ids of the nodes that are themselves in the set
    for path in paths:
        node = root
        for element in path:
            child = node.get(element)
            if child is None:
                child = node[element] = {}
            node = child
        members.add(id(node))
    return _sorted_tree(root, members)


def _sorted_tree(node: dict, members: set[int]) -> dict:
    # Kubernetes writes "." (the node itself is a member and has children) first, then the children
    # in order.
    out: dict = {".": {}} if node and id(node) in members else {}
    for key in sorted(node):
        out[key] = _sorted_tree(node[key], members)
    return out


def from_fields_v1(tree: Any) -> set[Path]:
    """Decode a FieldsV1 tree into a field set."""
    out: set[Path] = set()

    def visit(node: dict, prefix: Path) -> None:
        for key, sub in node.items():
            if key == ".":
                out.add(prefix)
            elif isinstance(sub, dict) and sub:
                visit(sub, (*prefix, key))
            else:
                out.add((*prefix, key))

    if isinstance(tree, dict):
        visit(tree, ())
    return out


def path_string(path: Path) -> str:
    """`.spec.containers[name="app"].image`, the form Kubernetes puts in conflict causes."""
    parts = []
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            parts.append("." + rest)
        elif kind == "k":
            keys = orjson.loads(rest)
            parts.append("[" + ",".join(f"{k}={orjson.dumps(v).decode()}" for k, v in keys.items()) + "]")
        elif kind == "v":
            parts.append("[=" + rest + "]")
        else:
            parts.append("[" + rest + "]")
    return "".join(parts)


# --- values at paths -------------------------------------------------------------------------------


def value_at(obj: Any, path: Path) -> Any:
    """The value a path names in an object, or MISSING."""
    node = obj
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            if not isinstance(node, dict) or rest not in node:
                return MISSING
            node = node[rest]
        elif kind in ("k", "v"):
            if not isinstance(node, list):
                return MISSING
            node = _find_element(node, kind, rest)
            if node is MISSING:
                return MISSING
        else:
            return MISSING
    return node


def _find_element(items: list, kind: str, rest: str) -> Any:
    if kind == "k":
        wanted = orjson.loads(rest)
        for item in items:
            if isinstance(item, dict) and all(
                item.get(key, _KEY_DEFAULTS.get(key, MISSING)) == value for key, value in wanted.items()
            ):
                return item
        return MISSING
    wanted = orjson.loads(rest)
    for item in items:
        if item == wanted:
            return item
    return MISSING


def remove_path(obj: Any, path: Path) -> None:
    """Delete what `path` names from `obj` in place (no-op when absent)."""
    if not path:
        return
    parent = value_at(obj, path[:-1])
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind in ("k", "v") and isinstance(parent, list):
        target = _find_element(parent, kind, rest)
        if target is not MISSING:
            for i, item in enumerate(parent):
                if item is target:
                    del parent[i]
                    break


# --- managedFields entries -------------------------------------------------------------------------


class _Entry:
    __slots__ = ("api_version", "fields", "manager", "operation", "subresource", "time")

    def __init__(
        self,
        manager: str,
        operation: str,
        api_version: str,
        time: str | None,
        fields: set[Path],
        subresource: str | None,
    ) -> None:
        self.manager = manager
        self.operation = operation
        self.api_version = api_version
        self.time = time
        self.fields = fields
        self.subresource = subresource or None

    def same(self, manager: str, operation: str, subresource: str | None) -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource or None)

    def encode(self) -> dict:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def _decode_entries(managed: Any) -> list[_Entry]:
    entries = []
    for raw in managed or ():
        if not isinstance(raw, dict):
            continue
        entries.append(
            _Entry(
                str(raw.get("manager", "")),
                str(raw.get("operation", "Update")),
                str(raw.get("apiVersion", "")),
                raw.get("time"),
                from_fields_v1(raw.get("fieldsV1")),
                raw.get("subresource"),
            )
        )
    return entries


def _write_entries(obj: dict, entries: list[_Entry]) -> None:
    metadata = obj.setdefault("metadata", {})
    kept = [entry.encode() for entry in entries if entry.fields]
    if kept:
        metadata["managedFields"] = kept
    else:
        metadata.pop("managedFields", None)


def managed_fields(obj: dict) -> dict[tuple[str, str, str | None], set[Path]]:
    """(manager, operation, subresource) -> field set; for tests and tools."""
    return {
        (e.manager, e.operation, e.subresource): e.fields
        for e in _decode_entries((obj.get("metadata") or {}).get("managedFields"))
    }


def _tracked(obj: Any, subresource: str | None) -> dict:
    """The part of an object whose fields are owned."""
    if not isinstance(obj, dict):
        return {}
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        kept = {k: metadata[k] for k in _TRACKED_METADATA if k in metadata}
        if kept:
            out["metadata"] = kept
    return out


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _walker(group: str, version: str, kind: str, schema: SchemaNode | None) -> SchemaNode:
    return schema if schema is not None else schemas.walker_for_gvk(group, version, kind)


# --- Update operations -----------------------------------------------------------------------------


def diff_fields(old: Any, new: Any, node: SchemaNode, prefix: Path = ()) -> tuple[set[Path], set[Path]]:
    """(changed or added paths, removed paths) between two objects."""
    changed: set[Path] = set()
    removed: set[Path] = set()
    _diff(old, new, node, prefix, changed, removed)
    return changed, removed


def _diff(old: Any, new: Any, node: SchemaNode, prefix: Path, changed: set[Path], removed: set[Path]) -> None:
    if old == new and type(old) is type(new):
        return
    if isinstance(old, dict) and isinstance(new, dict) and old and new and node.map_type != "atomic":
        for key, value in new.items():
            child = (*prefix, "f:" + key)
            if key not in old:
                _collect(value, node.field(key), child, changed, True)
            else:
                _diff(old[key], value, node.field(key), child, changed, removed)
        for key in old.keys() - new.keys():
            removed.add((*prefix, "f:" + key))
        return
    if isinstance(old, list) and isinstance(new, list) and old and new:
        kind, keys = _list_kind(node)
        if kind != "atomic":
            old_items = _identify(old, kind, keys)
            new_items = _identify(new, kind, keys)
            items_node = node.items()
            for element, item in new_items.items():
                path = (*prefix, element)
                if element not in old_items:
                    changed.add(path)
                    if kind == "map" and isinstance(item, dict):
                        for key, sub in item.items():
                            _collect(sub, items_node.field(key), (*path, "f:" + key), changed, True)
                elif kind == "map":
                    _diff(old_items[element], item, items_node, path, changed, removed)
            for element in old_items.keys() - new_items.keys():
                removed.add((*prefix, element))
            return
    _collect(new, node, prefix, changed, True)


def _under(path: Path, prefixes: set[Path]) -> bool:
    return any(path[:i] in prefixes for i in range(1, len(path) + 1))


def update_managed_fields(
    old: dict | None,
    new: dict,
    manager: str | None,
    operation: str = "Update",
    *,
    group: str,
    version: str,
    kind: str = "",
    subresource: str | None = None,
    schema: SchemaNode | None = None,
    now: str | None = None,
) -> dict:
    """Record an ordinary write (create, update, non-apply patch) in `new`'s managedFields.

    `old` is the stored object (None on create), `new` the object about to be stored; `new` is
    updated in place and returned. Changed and added fields move to `manager`'s `Update` entry,
    removed fields leave every entry. If `new` carries managedFields different from `old`'s, the
    client replaced them on purpose (as Kubernetes allows) and they are taken as the starting point;
    an empty list clears ownership.
    """
    manager = manager or "unknown"
    metadata = new.setdefault("metadata", {})
    old_managed = ((old or {}).get("metadata") or {}).get("managedFields")
    if "managedFields" in metadata and metadata["managedFields"] != old_managed:
        base = metadata["managedFields"]
        if not base:
            metadata.pop("managedFields", None)
            return new
    else:
        base = old_managed
    entries = _decode_entries(base)
    node = _walker(group, version, kind, schema)
    changed, removed = diff_fields(_tracked(old, subresource), _tracked(new, subresource), node)
    if not changed and not removed:
        _write_entries(new, entries)
        return new
    mine = next((e for e in entries if e.same(manager, operation, subresource)), None)
    if mine is None and changed:
        mine = _Entry(manager, operation, _api_version(group, version), None, set(), subresource)
        entries.append(mine)
    for entry in entries:
        if removed:
            entry.fields = {p for p in entry.fields if not _under(p, removed)}
        if entry is not mine and changed:
            entry.fields -= changed
    if mine is not None:
        mine.fields |= changed
        mine.time = now or _now()
        mine.api_version = _api_version(group, version)
    _write_entries(new, entries)
    return new


# --- Apply ---------------------------------------------------------------------------------------


def _merge_applied(live: Any, applied: Any, node: SchemaNode) -> Any:
    if applied is MISSING:
        return live
    if isinstance(applied, dict) and isinstance(live, dict) and node.map_type != "atomic":
        result = dict(live)
        for key, value in applied.items():
            result[key] = _merge_applied(live.get(key, MISSING), value, node.field(key))
        return result
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = _list_kind(node)
        if kind != "atomic":
            items_node = node.items()
            live_items = _identify(live, kind, keys)
            applied_items = _identify(applied, kind, keys)
            if len(applied_items) != len(applied) or len(live_items) != len(live):
                return _deepcopy(applied)  # elements without keys (or duplicates): replace as a whole
            result = []
            for element, item in live_items.items():
                if element in applied_items:
                    merged = (
                        _merge_applied(item, applied_items[element], items_node) if kind == "map" else item
                    )
                    result.append(merged)
                else:
                    result.append(item)
            for element, item in applied_items.items():
                if element not in live_items:
                    result.append(_deepcopy(item))
            return result
    return _deepcopy(applied)


def _conflict_error(conflicts: list[tuple[_Entry, Path]]) -> Conflict:
    causes = []
    for entry, path in conflicts:
        who = f'"{entry.manager}"'
        if entry.subresource:
            who += f' with subresource "{entry.subresource}"'
        if entry.operation == "Update":
            who += f" using {entry.api_version}"
            if entry.time:
                who += f" at {entry.time}"
        causes.append(
            {"type": "FieldManagerConflict", "message": f"conflict with {who}", "field": path_string(path)}
        )
    if len(causes) == 1:
        message = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        by_manager: dict[str, list[str]] = {}
        for cause in causes:
            by_manager.setdefault(cause["message"], []).append(cause["field"])
        lines = [f"Apply failed with {len(causes)} conflicts: "]
        for who, fields in by_manager.items():
            lines.append(who.replace("conflict with", "conflicts with", 1) + ":")
            lines.extend(f"- {field}" for field in fields)
        message = lines[0] + "\n".join(lines[1:])
    return Conflict(message, causes=causes)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _last_applied_fields(live: dict, node: SchemaNode, subresource: str | None) -> set[Path]:
    annotation = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not annotation:
        return set()
    try:
        last = orjson.loads(annotation)
    except orjson.JSONDecodeError:
        return set()
    return fields_of(_tracked(last, subresource), node) if isinstance(last, dict) else set()


def _sync_last_applied(result: dict, applied: dict) -> None:
    """Keep an existing last-applied annotation equal to what kubectl now applies server-side, so
    a later client-side apply computes its patch from the right base (kube-apiserver does this)."""
    annotations = (result.get("metadata") or {}).get("annotations")
    if not annotations or LAST_APPLIED not in annotations:
        return
    config = _deepcopy(applied)
    config_annotations = (config.get("metadata") or {}).get("annotations")
    if isinstance(config_annotations, dict):
        config_annotations.pop(LAST_APPLIED, None)
    annotations[LAST_APPLIED] = orjson.dumps(config).decode()


_MANAGED_FIELDS = frozenset({"managedFields"})


def server_side_apply(
    current: dict | None,
    applied: dict,
    *,
    manager: str,
    force: bool,
    group: str,
    version: str,
    kind: str,
    subresource: str | None = None,
    schema: SchemaNode | None = None,
    now: str | None = None,
) -> dict:
    """Apply a configuration to `current` (None: create it); returns the new object.

    Raises `BadRequest` for a configuration without apiVersion/kind or naming another kind, and
    `Conflict` (409, `FieldManagerConflict` causes) when it would change another manager's fields
    and `force` is false.
    """
    api_version = _api_version(group, version)
    if not applied.get("apiVersion") or not applied.get("kind"):
        raise BadRequest("apply configurations must set apiVersion and kind")
    if subresource is None and (applied["apiVersion"] != api_version or applied["kind"] != kind):
        raise BadRequest(
            f"the API version in the data ({applied['apiVersion']}) does not match the expected API version "
            f"({api_version})"
            if applied["apiVersion"] != api_version
            else f"the kind in the data ({applied['kind']}) does not match the expected kind ({kind})"
        )
    node = _walker(group, version, kind, schema)
    applied = {k: v for k, v in applied.items() if not (subresource is None and k == "status")}
    metadata = applied.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        applied["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    new_set = fields_of(_tracked(applied, subresource), node)
    live = current if current is not None else {}
    entries = _decode_entries((live.get("metadata") or {}).get("managedFields"))
    mine = next((e for e in entries if e.same(manager, "Apply", subresource)), None)
    previous = set(mine.fields) if mine is not None else set()

    containers = {path[:i] for path in new_set for i in range(1, len(path))}
    conflicts: list[tuple[_Entry, Path]] = []
    for entry in entries:
        # Entries of every subresource count: a replica count set through /scale conflicts with
        # an apply of spec.replicas (kube-apiserver's HPA-versus-apply conflict).
        if entry is mine:
            continue
        for path in sorted(new_set & entry.fields):
            if path in containers:
                continue  # an element both own: only its fields can conflict
            live_value = value_at(live, path)
            if live_value is MISSING:
                continue
            if live_value != value_at(applied, path):
                conflicts.append((entry, path))
    if conflicts and not force and manager == "kubectl":
        # Moving from client-side to server-side apply: kubectl may take the fields its own
        # last-applied-configuration lists (kube-apiserver's lastAppliedManager).
        allowed = _last_applied_fields(live, node, subresource)
        remaining = [(entry, path) for entry, path in conflicts if path not in allowed]
        if remaining:
            conflicts = remaining  # report only what the annotation does not excuse
        else:
            force = True
    if conflicts:
        if not force:
            raise _conflict_error(conflicts)
        for entry, path in conflicts:
            entry.fields.discard(path)

    result = _merge_applied(_deepcopy(live), applied, node) if current is not None else _deepcopy(applied)
    if current is not None:
        # The applied configuration never rewrites identity or server-set metadata (uid,
        # resourceVersion, creationTimestamp, ...): those keep their live values.
        live_metadata = live.get("metadata") or {}
        metadata = result.get("metadata")
        if not isinstance(metadata, dict):  # `metadata: null` in the applied configuration
            metadata = result["metadata"] = {}
        for key in list(metadata):
            if key not in _TRACKED_METADATA and key in live_metadata:
                metadata[key] = live_metadata[key]

    stale = previous - new_set
    if stale:
        others: set[Path] = set()
        for entry in entries:
            if entry is not mine:
                others |= entry.fields
        owned_prefixes = {path[:i] for path in others | new_set for i in range(1, len(path) + 1)}
        removable = {path for path in stale if path not in owned_prefixes and not _under(path, others)}
        for path in removable:
            if any(path[:i] in removable for i in range(1, len(path))):
                continue  # an ancestor goes away with it
            remove_path(result, path)
            # Go drops empty maps and lists (omitempty); do not leave `labels: {}` behind.
            parent = path[:-1]
            while parent and parent not in owned_prefixes:
                value = value_at(result, parent)
                if value is MISSING or value or not isinstance(value, dict | list):
                    break
                remove_path(result, parent)
                parent = parent[:-1]

    if manager == "kubectl" and current is not None:
        _sync_last_applied(result, applied)

    # As Kubernetes: an apply that changes nothing in the object leaves its manager's time alone, so
    # the whole write is a no-op (same resourceVersion, no watch event).
    unchanged = current is not None and same_but_metadata(result, live, _MANAGED_FIELDS)
    if mine is None:
        mine = _Entry(manager, "Apply", api_version, None, set(), subresource)
        entries.append(mine)
    mine.fields = new_set
    if not unchanged or mine.time is None or mine.api_version != api_version:
        mine.time = now or _now()
    mine.api_version = api_version
    _write_entries(result, entries)
    return result
