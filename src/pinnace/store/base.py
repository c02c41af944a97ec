"""The Store protocol: a revisioned, watchable key-value log (the model of etcd v3 and kine).

Every backend keeps one global revision counter. Each write (create, update, delete) gets the next
revision; an object's `metadata.resourceVersion` is the revision of its last write, as a decimal string.
Values are opaque bytes to the store (the apiserver stores JSON).

Watch semantics: `watch(prefix, after_revision)` yields every change to keys under `prefix` whose
revision is strictly greater than `after_revision`, in revision order, each with the new value and the
previous value. A watch that starts at or below the compacted revision raises `Compacted` (HTTP 410
"Expired" upstream). A watcher that cannot keep up is cut off with `WatchLagging`: it must re-list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: str
    revision: int  # the revision of this change
    value: bytes | None  # the new value (for DELETED: None)
    prev_value: bytes | None  # the value before this change (for ADDED: None)
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the store revision the list was read at
    more: bool  # more keys remain after the last item
    remaining: int = 0  # how many keys remain after the last item (when known)


class StoreError(Exception):
    """Base of every store error; the message names the problem and what to do."""


class KeyExists(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key


class KeyNotFound(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found")
        self.key = key


class RevisionMismatch(StoreError):
    """Compare-and-swap failed: the key's current mod_revision is not the expected one."""

    def __init__(self, key: str, expected: int, current: KeyValue | None) -> None:
        actual = current.mod_revision if current else "absent"
        super().__init__(f"key {key!r} changed: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.current = current


class Compacted(StoreError):
    """The requested revision is older than the oldest revision kept."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted (oldest kept is {compacted + 1}); re-list to continue"
        )
        self.requested = requested
        self.compacted = compacted


class FutureRevision(StoreError):
    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is newer than the current revision {current}")
        self.requested = requested
        self.current = current


class WatchLagging(StoreError):
    """A watcher fell too far behind and was cut off; it must re-list."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or opened (bad file, dead etcd); the message says what to do."""


class CorruptValue(StoreError):
    """A stored value could not be decoded."""


class InvalidKey(StoreError):
    """A key outside the store's key space (keys are absolute paths such as /registry/pods/ns/name)."""


def check_key(key: str) -> None:
    """Raise InvalidKey unless `key` is a non-empty absolute path, the only keys a store holds."""
    if not isinstance(key, str) or not key.startswith("/"):
        raise InvalidKey(
            f"key {key!r} is outside the store's key space: keys are absolute paths such as "
            "/registry/pods/default/web; fix the caller that built it"
        )


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string that starts with `prefix` (etcd's range_end)."""
    if not prefix:
        return "\U0010ffff"
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix + "\U0010ffff"  # cannot increment; keys with U+10FFFF after this are not supported
    return prefix[:-1] + chr(last + 1)


def decode_json(key: str, value: bytes) -> Any:
    """The JSON object stored under `key`; raises CorruptValue (naming the key and the fix) if it is not."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise CorruptValue(
            f"the value stored under {key!r} is not valid JSON ({e}); delete the key (or restore the store "
            "from a backup) and recreate the object"
        ) from None


class Store(Protocol):
    """What every backend provides; `tests/unit/store/` holds the conformance suite they all pass."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, key: str, value: bytes) -> int:
        """Store a new key; returns the new revision. Raises KeyExists."""
        ...

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None: ...

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        limit: int = 0,
        start_after: str | None = None,
    ) -> ListResult:
        """Keys under `prefix` in key order, as of `revision` (default: now).

        `start_after` with the same `revision` pages through a consistent snapshot while writes go on.
        Raises Compacted when `revision` is no longer kept.
        """
        ...

    async def count(self, prefix: str) -> int: ...

    async def update(self, key: str, value: bytes, expected_revision: int | None) -> int:
        """Compare-and-swap on mod_revision (None: unconditional). Returns the new revision.

        Raises KeyNotFound or RevisionMismatch.
        """
        ...

    async def delete(self, key: str, expected_revision: int | None = None) -> KeyValue:
        """Delete; returns the deleted key-value with mod_revision set to the deletion revision.

        Raises KeyNotFound or RevisionMismatch.
        """
        ...

    async def current_revision(self) -> int: ...

    async def compacted_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:
        """Changes under `prefix` with revision > after_revision, in order. See the module docstring."""
        ...
