"""The four PATCH types of the Kubernetes API, as pure functions on object dicts.

- `application/json-patch+json`: RFC 6902 (`add`, `remove`, `replace`, `move`, `copy`, `test`);
- `application/merge-patch+json`: RFC 7386 (objects merge, `null` deletes, lists replace);
- `application/strategic-merge-patch+json`: Kubernetes' strategic merge patch. Lists whose schema says
  `x-kubernetes-patch-strategy: merge` merge element-wise (by `x-kubernetes-patch-merge-key` for lists of
  objects, as a union for lists of scalars); every other list is replaced. Directives: `$patch`
  (`replace`, `delete`, `merge`) on maps and list elements, `$setElementOrder/<list>`,
  `$deleteFromPrimitiveList/<list>`, `$retainKeys`. Custom resources have no Go struct tags to read
  strategies from, so Kubernetes answers 415 for them, and so does pinnace;
- `application/apply-patch+yaml`: server-side apply, in `pinnace.api.apply`.

`apply_patch` is the single entry point of the API server's PATCH handler: it decodes the body by
content type and returns the patched object. Errors are typed (`PatchError` subclasses) and carry
`code`, `reason`, `message` and `causes`, ready to become a `Status` body (`error.status()`).

Ownership bookkeeping: for `application/apply-patch+yaml` the returned object already carries updated
`metadata.managedFields`; for the three other types the caller records the change as an `Update`
operation with `pinnace.api.apply.update_managed_fields(old, new, manager, "Update")`, exactly as it
does for PUT and POST (`is_apply_content_type()` tells the two cases apart).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import yaml

from pinnace.api import schemas
from pinnace.api.schemas import SchemaNode

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PATCH_CONTENT_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


# --- errors ----------------------------------------------------------------------------------------


class PatchError(Exception):
    """A patch the server refuses; `status()` is the Kubernetes Status body for it."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, causes: list[dict] | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.causes = causes or []
        self.details = details or {}

    def status(self) -> dict:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        details = dict(self.details)
        if self.causes:
            details["causes"] = self.causes
        if details:
            body["details"] = details
        body["code"] = self.code
        return body


class BadRequest(PatchError):
    code = 400
    reason = "BadRequest"


class NotFound(PatchError):
    code = 404
    reason = "NotFound"


class Conflict(PatchError):
    """409; server-side apply conflicts carry `FieldManagerConflict` causes."""

    code = 409
    reason = "Conflict"


class UnsupportedMediaType(PatchError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(PatchError):
    code = 422
    reason = "Invalid"


# --- shared helpers --------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """`application/merge-patch+json; charset=utf-8` -> `application/merge-patch+json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_apply_content_type(content_type: str | None) -> bool:
    return media_type(content_type) == APPLY_PATCH


def _decode_json(body: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"error decoding patch: {exc}") from None


def _decode_yaml(body: bytes | str) -> Any:
    # kubectl sends JSON (a subset of YAML); parse that fast path first.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise BadRequest(f"error decoding YAML: {exc}") from None


def _deepcopy(value: Any) -> Any:
    # orjson round trip is several times faster than copy.deepcopy for JSON-shaped data.
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return copy.deepcopy(value)


# --- RFC 6902 JSON patch ----------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise Invalid(
            f"the server rejected our request due to an error in our request: invalid path {path!r}"
        )
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(
            f"the server rejected our request due to an error in our request: invalid path {path!r}"
        )
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list, token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise Invalid(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise Invalid(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, tokens: list[str], op: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise Invalid(f'doc is missing path: "/{"/".join(tokens)}"')
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise Invalid(f'doc is missing path: "/{"/".join(tokens)}"')
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise Invalid(f'doc is missing path: "/{"/".join(tokens)}"')
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, "add")
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise Invalid(f'doc is missing path: "/{"/".join(tokens)}"')
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        return None, doc
    parent = _parent(doc, tokens, "remove")
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise Invalid(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False))
    raise Invalid(f'doc is missing path: "/{"/".join(tokens)}"')


def _json_equal(a: Any, b: Any) -> bool:
    # JSON has one number type: 1 == 1.0, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def json_patch(obj: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch; returns a new document, `obj` is not modified."""
    if not isinstance(ops, list):
        raise BadRequest("json patch must be a list of operations")
    doc = _deepcopy(obj)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise BadRequest(f"invalid json patch operation: {op!r}")
        kind = op["op"]
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"missing value for {kind} operation")
        if kind == "add":
            doc = _add(doc, tokens, _deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, tokens)
        elif kind == "replace":
            if tokens:
                _get(doc, tokens)  # replace requires the target to exist
                parent = _parent(doc, tokens, "replace")
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1], allow_end=False)] = _deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = _deepcopy(op["value"])
            else:
                doc = _deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            if kind == "move":
                if tokens[: len(source)] == source and len(tokens) > len(source):
                    raise Invalid("cannot move a value into one of its children")
                doc, value = _remove(doc, source)
            else:
                value = _deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if not _json_equal(_get(doc, tokens), op["value"]):
                raise Invalid(f"testing value /{'/'.join(tokens)} failed: test failed")
        else:
            raise BadRequest(f"Unexpected kind: {kind}")
    return doc


# --- RFC 7386 merge patch -----------------------------------------------------------------------------


def merge_patch(obj: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch; returns a new document."""
    if not isinstance(patch, dict):
        return _deepcopy(patch)
    result = _deepcopy(obj) if isinstance(obj, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = {}
                target[key] = current
            _merge_into(current, value)
        else:
            target[key] = _deepcopy(value) if isinstance(value, list) else value


def create_merge_patch(original: Any, modified: Any) -> Any:
    """The RFC 7386 patch that turns `original` into `modified` (used by tests and tools)."""
    if not isinstance(original, dict) or not isinstance(modified, dict):
        return _deepcopy(modified)
    patch: dict = {}
    for key in original.keys() - modified.keys():
        patch[key] = None
    for key, value in modified.items():
        if key not in original:
            patch[key] = _deepcopy(value)
        elif isinstance(value, dict) and isinstance(original[key], dict):
            sub = create_merge_patch(original[key], value)
            if sub:
                patch[key] = sub
        elif not _json_equal(original[key], value):
            patch[key] = _deepcopy(value)
    return patch


# --- strategic merge patch --------------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(obj: Any, patch: Any, schema_walker: SchemaNode) -> Any:
    """Apply a strategic merge patch using the list strategies found by `schema_walker`.

    `schema_walker` is the `SchemaNode` of the object's kind (`schemas.walker_for_gvk(...)`).
    Returns a new document.
    """
    if not isinstance(patch, dict):
        raise BadRequest("strategic merge patch must be a JSON object")
    original = _deepcopy(obj) if isinstance(obj, dict) else {}
    result = _smp_map(original, patch, schema_walker)
    return {} if result is None else result


def _smp_map(original: dict, patch: dict, node: SchemaNode) -> dict | None:
    """Merge `patch` into `original` (which is owned, may be modified). None means "delete me"."""
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "delete":
            return None
        if directive == "replace":
            return _strip_directives({k: v for k, v in patch.items() if k != _DIRECTIVE})
        if directive != "merge":
            raise Invalid(f"unknown patch type: {directive} in map: {patch}")
    retain = patch.get(_RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list):
            raise Invalid(f"invalid $retainKeys directive: {retain!r}")
        keep = set(retain)
        for key in list(original):
            if key not in keep:
                del original[key]
    orders: dict[str, list] = {}
    deletions: dict[str, list] = {}
    for key, value in patch.items():
        if key.startswith(_SET_ORDER):
            orders[key[len(_SET_ORDER) :]] = value if isinstance(value, list) else []
        elif key.startswith(_DELETE_PRIMITIVE):
            deletions[key[len(_DELETE_PRIMITIVE) :]] = value if isinstance(value, list) else []
    for key, value in patch.items():
        if (
            key in (_DIRECTIVE, _RETAIN_KEYS)
            or key.startswith(_SET_ORDER)
            or key.startswith(_DELETE_PRIMITIVE)
        ):
            continue
        child = node.field(key)
        if value is None:
            original.pop(key, None)
        elif isinstance(value, dict):
            current = original.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value, child)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            current = original.get(key)
            original[key] = _smp_list(
                current if isinstance(current, list) else [], value, child, orders.pop(key, None)
            )
        else:
            original[key] = value
    for key, values in deletions.items():
        current = original.get(key)
        if isinstance(current, list):
            remove = [v for v in values]
            original[key] = [item for item in current if not any(_json_equal(item, r) for r in remove)]
    for key, order in orders.items():
        # An order for a list the patch does not otherwise touch still reorders it.
        current = original.get(key)
        if isinstance(current, list):
            original[key] = _reorder(current, [], order, node.field(key).merge_key)
    return original


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (
                k in (_DIRECTIVE, _RETAIN_KEYS) or k.startswith(_SET_ORDER) or k.startswith(_DELETE_PRIMITIVE)
            )
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_list(original: list, patch: list, node: SchemaNode, order: list | None) -> list:
    if "merge" not in node.patch_strategies:
        # Atomic in SMP: tolerations, args, command, ... are replaced wholesale.
        return [
            _strip_directives(item)
            for item in patch
            if not (
                isinstance(item, dict) and item.get(_DIRECTIVE) in ("replace", "delete") and len(item) == 1
            )
        ]
    # A `{"$patch": "replace"}` element means "the rest of this list is the whole list".
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [
            _strip_directives(item) for item in patch if not (isinstance(item, dict) and _DIRECTIVE in item)
        ]
    merge_key = node.merge_key
    items_node = node.items()
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        # Lists of scalars with strategy merge (finalizers): a union that keeps the original order.
        result = list(original)
        for item in patch:
            if not any(_json_equal(item, existing) for existing in result):
                result.append(item)
        return _reorder(result, patch, order, None) if order is not None else result
    result = list(original)
    patched_keys: list[Any] = []
    for item in patch:
        if merge_key not in item:
            raise Invalid(f"map: {item} does not contain declared merge key: {merge_key}")
        key = item[merge_key]
        position = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == key
            ),
            None,
        )
        if item.get(_DIRECTIVE) == "delete":
            result = [e for e in result if not (isinstance(e, dict) and e.get(merge_key) == key)]
            continue
        patched_keys.append(key)
        if position is None:
            merged = _smp_map({}, item, items_node)
            if merged is not None:
                result.append(merged)
        else:
            merged = _smp_map(result[position], item, items_node)
            if merged is None:
                del result[position]
            else:
                result[position] = merged
    if order is not None:
        return _reorder(result, patched_keys, order, merge_key)
    return result


def _reorder(items: list, patched: list, order: list, merge_key: str | None) -> list:
    """Apply `$setElementOrder`: items named in the order come in that order; the others keep
    their place relative to the original list, as Kubernetes' normalizeElementOrder does."""

    def ident(item: Any) -> Any:
        if merge_key is not None and isinstance(item, dict):
            return orjson.dumps(item.get(merge_key))
        return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)

    wanted = [ident(entry) for entry in order]
    position = {key: i for i, key in enumerate(wanted)}
    original_position = {ident(item): i for i, item in enumerate(items)}
    in_order = sorted((item for item in items if ident(item) in position), key=lambda it: position[ident(it)])
    others = [item for item in items if ident(item) not in position]
    result: list = []
    i = j = 0
    while i < len(in_order) and j < len(others):
        left = original_position.get(ident(in_order[i]))
        right = original_position[ident(others[j])]
        if left is not None and left < right:
            result.append(in_order[i])
            i += 1
        else:
            result.append(others[j])
            j += 1
    result.extend(in_order[i:])
    result.extend(others[j:])
    return result


# --- the entry point -------------------------------------------------------------------------------


def apply_patch(
    current: dict | None,
    body: bytes | str,
    content_type: str,
    *,
    group: str,
    version: str,
    kind: str,
    is_custom: bool,
    field_manager: str | None,
    force: bool,
    subresource: str | None,
    schema: SchemaNode | None = None,
    now: str | None = None,
) -> dict:
    """Apply a PATCH request body to `current` (None when the object does not exist).

    Returns the new object. `schema` overrides the schema walker (custom resources pass the
    `SchemaNode` of their CRD's openAPIV3Schema; built-in kinds find theirs by group/version/kind).
    `now` is the RFC 3339 timestamp recorded in managedFields (defaults to the current time).
    Raises `UnsupportedMediaType` (415), `BadRequest` (400), `NotFound` (404, a non-apply patch of a
    missing object), `Conflict` (409, apply conflicts) or `Invalid` (422, a patch that does not apply).
    """
    media = media_type(content_type)
    if media not in PATCH_CONTENT_TYPES:
        supported = ", ".join(
            t for t in PATCH_CONTENT_TYPES if not (is_custom and t == STRATEGIC_MERGE_PATCH)
        )
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: {supported}"
        )
    if media == STRATEGIC_MERGE_PATCH and is_custom:
        raise UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
        )
    if media == APPLY_PATCH:
        from pinnace.api import apply as ssa

        applied = _decode_yaml(body)
        if not isinstance(applied, dict):
            raise BadRequest("apply patch must be a YAML or JSON object")
        if not field_manager:
            raise BadRequest("PATCH, application/apply-patch+yaml requires fieldManager to be set")
        return ssa.server_side_apply(
            current,
            applied,
            manager=field_manager,
            force=force,
            group=group,
            version=version,
            kind=kind,
            subresource=subresource,
            schema=schema,
            now=now,
        )
    if current is None:
        raise NotFound(f"{kind.lower()} not found")
    if media == JSON_PATCH:
        result = json_patch(current, _decode_json(body, "json patch"))
    elif media == MERGE_PATCH:
        patch = _decode_json(body, "merge patch")
        if not isinstance(patch, dict):
            raise BadRequest("merge patch must be a JSON object")
        result = merge_patch(current, patch)
    else:
        patch = _decode_json(body, "strategic merge patch")
        walker = schema if schema is not None else schemas.walker_for_gvk(group, version, kind)
        result = strategic_merge_patch(current, patch, walker)
    if not isinstance(result, dict):
        raise Invalid("the patched object is not a JSON object")
    return result
