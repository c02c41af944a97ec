"""Small helpers over object dicts: keys, owners, timestamps, names."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping

# RFC 1123 subdomain (most object names) and label (namespaces, services), as apimachinery validates them.
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def key_of(obj: Mapping) -> str:
    """`"<namespace>/<name>"`, or `"<name>"` for cluster-scoped objects (client-go's key function)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else meta.get("name", "")


def split_key(key: str) -> tuple[str | None, str]:
    namespace, _, name = key.rpartition("/")
    return (namespace or None), name


def owner_controller(obj: Mapping) -> dict | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_being_deleted(obj: Mapping) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps: RFC 3339, seconds, UTC, `Z`."""
    now = int(time.time())
    if now != _last_second[0]:  # formatting is the costly part; it changes once a second
        _last_second[0], _last_second[1] = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return _last_second[1]


_last_second: list = [0, ""]


def format_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def labels_of(obj: Mapping) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def same_but_metadata(a: Mapping, b: Mapping, ignored: frozenset[str]) -> bool:
    """Whether two objects are equal but for the metadata fields named in `ignored` (bookkeeping such
    as resourceVersion or managedFields), without copying either."""
    if a.keys() != b.keys():
        return False
    for field, value in a.items():
        other = b[field]
        if field != "metadata" or not isinstance(value, Mapping) or not isinstance(other, Mapping):
            if value != other:
                return False
            continue
        if {k for k in value if k not in ignored} != {k for k in other if k not in ignored}:
            return False
        if any(v != other[k] for k, v in value.items() if k not in ignored):
            return False
    return True
