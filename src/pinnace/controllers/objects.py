"""Small helpers over object dicts that every controller shares.

Objects are plain JSON-shaped dicts, exactly as the API server sends them. Nothing here does I/O.
Label selectors are matched with `pinnace.api.selectors`, accepting also the plain map form that
ReplicationControllers and Services use.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from collections.abc import Mapping
from typing import Any

from pinnace.api.selectors import LabelSelector, SelectorError, label_selector_from_dict

Object = dict[str, Any]

# Words Kubernetes uses, kept in one place.
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"


# --- identity ---------------------------------------------------------------------------------------


def key_of(obj: Mapping[str, Any]) -> str:
    """The cache and queue key: `namespace/name`, or `name` for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def split_key(key: str) -> tuple[str | None, str]:
    namespace, _, name = key.rpartition("/")
    return (namespace or None), name


def name_of(obj: Mapping[str, Any]) -> str:
    return obj["metadata"]["name"]


def namespace_of(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def uid_of(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("uid", "")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def is_being_deleted(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def generation_of(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


# --- owner references -------------------------------------------------------------------------------


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True, block: bool = True) -> Object:
    """A controller reference to `owner`, as a controller writes it on what it creates."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": block,
    }


def controller_ref(obj: Mapping[str, Any]) -> Object | None:
    """The owner reference with `controller: true`, if any (at most one exists)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid_of(owner)


# --- label selectors --------------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether `labels` match a LabelSelector (`matchLabels`/`matchExpressions`) or a plain map.

    An empty LabelSelector matches everything, as in Kubernetes; callers that must treat an empty or
    missing selector as "nothing" (Services, ReplicaSets) check that first. A selector that cannot be
    parsed selects nothing.
    """
    if selector is None:
        return False
    parsed = _parsed_selector(json.dumps(selector, sort_keys=True))
    return parsed is not None and parsed.matches(labels)


@functools.lru_cache(maxsize=4096)
def _parsed_selector(text: str) -> LabelSelector | None:
    selector = json.loads(text)
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}  # the map form of ReplicationControllers and Services
    try:
        return label_selector_from_dict(selector)
    except SelectorError:
        return None


def selector_is_empty(selector: Mapping[str, Any] | None) -> bool:
    if not selector:
        return True
    if "matchLabels" in selector or "matchExpressions" in selector:
        return not selector.get("matchLabels") and not selector.get("matchExpressions")
    return False


# --- time -------------------------------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(when: dt.datetime | None = None) -> str:
    """RFC 3339 with second precision, the form Kubernetes uses for metav1.Time."""
    return (when or now()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# --- conditions -------------------------------------------------------------------------------------


def get_condition(status: Mapping[str, Any] | None, type_: str) -> Object | None:
    for condition in (status or {}).get("conditions") or ():
        if condition.get("type") == type_:
            return condition
    return None


def set_condition(status: Object, condition: Object, *, keep_transition: bool = True) -> None:
    """Put `condition` into `status.conditions`, keeping lastTransitionTime when the status is unchanged."""
    conditions = status.setdefault("conditions", [])
    for i, existing in enumerate(conditions):
        if existing.get("type") == condition["type"]:
            if keep_transition and existing.get("status") == condition.get("status"):
                condition = {**condition, "lastTransitionTime": existing.get("lastTransitionTime")
                             or condition.get("lastTransitionTime")}
            conditions[i] = condition
            return
    conditions.append(condition)


def remove_condition(status: Object, type_: str) -> None:
    if status.get("conditions"):
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != type_]


# --- hashing and comparison -------------------------------------------------------------------------

# The alphabet Kubernetes uses for generated name suffixes: no vowels (no words), no look-alikes.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _prune(value: Any) -> Any:
    """Drop None, empty maps and empty lists so that equivalent spellings of a template compare equal.

    `kubectl rollout undo` sends `creationTimestamp: null` and `resources: {}`; the server may or may not
    keep them. Their absence and their empty presence mean the same thing.
    """
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def canonical(value: Any) -> Any:
    return _prune(copy.deepcopy(value))


def status_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal up to zero counts and empty fields, which a server may omit (omitempty) or keep."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            items = {k: strip(v) for k, v in value.items()}
            return {k: v for k, v in items.items() if v not in (None, 0, False, {}, [], "")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(dict(a or {})) == strip(dict(b or {}))


def stable_hash(value: Any, collision_count: int | None = None) -> str:
    """A short, stable, name-safe hash of a JSON value (like Kubernetes' ComputeHash, in spirit).

    FNV-1a over the canonical JSON, the collision count mixed in so a clash yields a new name.
    """
    data = json.dumps(canonical(value), sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    out = []
    for _ in range(10):
        h, digit = divmod(h, len(_SAFE_ALPHABET))
        out.append(_SAFE_ALPHABET[digit])
        if h == 0:
            break
    return "".join(out)


# --- int-or-percent ---------------------------------------------------------------------------------


def scaled_value(value: int | str | None, total: int, *, round_up: bool, default: int | str = 0) -> int:
    """Resolve an IntOrString (`3` or `"25%"`) against `total`, as Kubernetes' GetScaledValueFromIntOrPercent."""
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        numerator = percent * total
        return -(-numerator // 100) if round_up else numerator // 100
    return int(text)
