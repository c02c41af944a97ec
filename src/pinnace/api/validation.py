"""Schema validation, `fieldValidation` modes, and the metadata rules every object obeys.

Objects are checked against Kubernetes 1.32's strict schemas (`pinnace.api.schemas`, compiled once per
kind by jsonschema-rs). What the checks find falls in two classes, as in kube-apiserver:
- unknown or duplicate fields: decoding problems. `fieldValidation=Strict` rejects them (400
  BadRequest, `strict decoding error: unknown field "spec.x"`), `Warn` (the default) answers with a
  `Warning` header per field and drops them, `Ignore` drops them silently;
- values of the wrong JSON type: also decoding problems, 400 BadRequest (`Pod in version "v1" cannot be
  handled as a Pod: ...`);
- everything else (bad enum values and formats, bad names and labels): 422 Invalid with one
  `details.causes` entry per problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pinnace.api import schemas
from pinnace.api.meta import DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN

FIELD_VALIDATION_MODES = ("Strict", "Warn", "Ignore")


@dataclass
class ValidationResult:
    unknown_fields: list[str] = field(default_factory=list)  # "spec.containerz"
    type_errors: list[str] = field(default_factory=list)  # "spec.replicas: "3" is not of type "integer""
    causes: list[dict] = field(default_factory=list)  # 422 causes: {"reason", "message", "field"}


def _cause(reason: str, message: str, path: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": path}


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


_UNEXPECTED = re.compile(r"'([^']*)' (?:was|were) unexpected|'([^']*)'")


def validate_schema(group: str, version: str, kind: str, obj: dict) -> ValidationResult:
    """Check `obj` against the kind's strict schema. Kinds without a schema pass.

    The schemas' `required` lists are not enforced: they mark fields without Go's `omitempty`, not
    what kube-apiserver rejects (a Node with a partial `nodeInfo` is fine). The fields Kubernetes does
    require are checked per kind (pinnace.apiserver.strategies) and in `validate_metadata`.
    """
    result = ValidationResult()
    validator = schemas.validator_for_gvk(group, version, kind, strict=True)
    if validator is None or validator.is_valid(obj):
        return result
    for error in validator.iter_errors(obj):
        path = list(error.instance_path)
        error_kind = type(error.kind).__name__
        if error_kind == "AdditionalProperties":
            inner = error.message.split("(", 1)[-1]
            for name in re.findall(r"'([^']*)'", inner):
                result.unknown_fields.append(_path([*path, name]))
        elif error_kind == "Required":
            continue
        elif error_kind == "Type":
            result.type_errors.append(f"{_path(path)}: {error.message}")
        else:
            result.causes.append(_cause("FieldValueInvalid", f"Invalid value: {error.message}", _path(path)))
    return result


def drop_fields(obj: dict, paths: list[str]) -> None:
    """Remove unknown fields (`fieldValidation` Warn or Ignore keep decoding without them)."""
    for path in paths:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        if not parts:
            continue  # a field named "" or "." has no path to follow
        cur: Any = obj
        for part in parts[:-1]:
            if part.startswith("["):
                index = int(part[1:-1])
                cur = cur[index] if isinstance(cur, list) and index < len(cur) else None
            else:
                cur = cur.get(part) if isinstance(cur, dict) else None
            if cur is None:
                break
        if isinstance(cur, dict):
            cur.pop(parts[-1], None)


def duplicate_fields(body: bytes, decoded: Any = None) -> list[str]:
    """Field names that appear twice in one JSON object (Go's strict decoder reports them).

    With the already decoded body, the common case is cheap: re-encoding it writes one `":` per key
    kept (and the same ones inside string values as the body has), so equal counts mean no key was
    dropped as a repeat. Otherwise (a repeat, or whitespace before a colon) the body is parsed again,
    keeping every pair.
    """
    if decoded is not None and orjson.dumps(decoded).count(b'":') == body.count(b'":'):
        return []
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        seen = set()
        for key, _ in pairs:
            if key in seen:
                found.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=hook)
    except ValueError:
        return []
    return found


# ---- metadata: names, labels, annotations ----

_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUALIFIED_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex "
    "used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

# Kinds whose names must be RFC 1123 labels or DNS-1035 labels; all others are RFC 1123 subdomains.
_LABEL_NAMED = frozenset({"Namespace"})
_DNS1035_NAMED = frozenset({"Service"})
# Kinds whose names are path segments only (RBAC allows ':' and more): any name without '/' or '%'.
_PATH_NAMED = frozenset({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


def name_problems(kind: str, name: str) -> list[str]:
    if kind in _PATH_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            return [f"may not contain '/' or '%' or be '.' or '..': {name!r}"]
        return []
    if kind in _DNS1035_NAMED:
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1035_LABEL.match(name) else [_DNS1035_MESSAGE]
    if kind in _LABEL_NAMED:
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1123_LABEL.match(name) else [_LABEL_MESSAGE]
    if len(name) > 253:
        return ["must be no more than 253 characters"]
    return [] if DNS1123_SUBDOMAIN.match(name) else [_SUBDOMAIN_MESSAGE]


def _qualified_name_problems(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix:
        if len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            problems.append("prefix part " + _SUBDOMAIN_MESSAGE)
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _LABEL_NAME.match(name):
        problems.append(_QUALIFIED_MESSAGE)
    return problems


def validate_metadata(kind: str, meta: Mapping, namespaced: bool) -> list[dict]:
    """Causes for a bad name, namespace, labels or annotations (422 Invalid)."""
    causes = []
    name = meta.get("name") or ""
    if not name:
        if not meta.get("generateName"):
            causes.append(_cause("FieldValueRequired", "Required value: name or generateName is required", "metadata.name"))
    else:
        for problem in name_problems(kind, name):
            causes.append(_cause("FieldValueInvalid", f'Invalid value: "{name}": {problem}', "metadata.name"))
    for key, value in (meta.get("labels") or {}).items():
        for problem in _qualified_name_problems(key):
            causes.append(_cause("FieldValueInvalid", f'Invalid value: "{key}": {problem}', "metadata.labels"))
        if not isinstance(value, str):
            causes.append(_cause("FieldValueInvalid", f"Invalid value: {value!r}: must be a string", "metadata.labels"))
        elif value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            causes.append(
                _cause("FieldValueInvalid", f'Invalid value: "{value}": {_LABEL_VALUE_MESSAGE}', "metadata.labels")
            )
    for i, finalizer in enumerate(meta.get("finalizers") or ()):
        for problem in _qualified_name_problems(finalizer if isinstance(finalizer, str) else ""):
            causes.append(_cause("FieldValueInvalid", f'Invalid value: "{finalizer}": {problem}', f"metadata.finalizers[{i}]"))
    controllers = 0
    for i, ref in enumerate(meta.get("ownerReferences") or ()):
        for name in ("apiVersion", "kind", "name", "uid"):
            if not (ref or {}).get(name):
                causes.append(_cause("FieldValueRequired", "Required value", f"metadata.ownerReferences[{i}].{name}"))
        controllers += 1 if (ref or {}).get("controller") else 0
    if controllers > 1:
        causes.append(_cause("FieldValueInvalid", "Invalid value: only one reference can have Controller set to true", "metadata.ownerReferences"))
    total = 0
    for key, value in (meta.get("annotations") or {}).items():
        for problem in _qualified_name_problems(key.lower()):
            causes.append(_cause("FieldValueInvalid", f'Invalid value: "{key}": {problem}', "metadata.annotations"))
        total += len(key) + len(value if isinstance(value, str) else "")
    if total > 256 * 1024:
        causes.append(
            _cause("FieldValueTooLong", "Too long: must have at most 262144 bytes", "metadata.annotations")
        )
    return causes
