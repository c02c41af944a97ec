"""The cluster store: a revisioned, watchable key-value log with SQLite and etcd backends.

`open_store(url, data_dir)` returns an unstarted backend; `await store.start()` before use and
`await store.close()` after (both backends are also async context managers). URLs:

- `sqlite`: `<data_dir>/state.db`
- `sqlite:///abs/path/state.db[?synchronous=normal]`
- `etcd://host1:2379,host2:2379[/prefix]`: the members to try in order; the prefix (default
  none) is prepended to every key and stripped from every result.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pinnace.store.base import (
    Compacted,
    CorruptValue,
    Event,
    FutureRevision,
    InvalidKey,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    Store,
    StoreError,
    StoreUnavailable,
    WatchLagging,
    decode_json,
)

__all__ = [
    "Compacted",
    "CorruptValue",
    "Event",
    "FutureRevision",
    "InvalidKey",
    "KeyExists",
    "KeyNotFound",
    "KeyValue",
    "ListResult",
    "RevisionMismatch",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WatchLagging",
    "decode_json",
    "open_store",
]


def open_store(url: str, data_dir: str | Path) -> Store:
    """The backend named by `url` (see the module docstring); raises StoreError for a bad URL."""
    if url == "sqlite" or url.startswith("sqlite:"):
        from pinnace.store.sqlite import SqliteStore

        if url == "sqlite":
            return SqliteStore(Path(data_dir) / "state.db")
        parts = urlsplit(url)
        if not parts.path.startswith("/") or parts.netloc:
            raise StoreError(f"store URL {url!r} needs an absolute path: sqlite:///var/lib/pinnace/state.db")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return SqliteStore(parts.path, synchronous=options.get("synchronous", "FULL"))
    if url.startswith("etcd://"):
        from pinnace.store.etcd import EtcdStore

        rest = url[len("etcd://") :]
        hosts, _, prefix = rest.partition("/")
        endpoints = [h.strip() for h in hosts.split(",") if h.strip()]
        if not endpoints:
            raise StoreError(f"store URL {url!r} names no etcd endpoint: etcd://127.0.0.1:2379[/prefix]")
        return EtcdStore(endpoints, prefix=f"/{prefix.rstrip('/')}" if prefix else "")
    raise StoreError(
        f"unknown store URL {url!r}: use 'sqlite', 'sqlite:///path/state.db' or 'etcd://host:2379[/prefix]'"
    )
