"""Choosing a backend by URL, and the helpers every caller of the store shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinnace.store import StoreError, open_store
from pinnace.store.etcd import EtcdStore
from pinnace.store.sqlite import SqliteStore


def test_open_store_urls(tmp_path: Path) -> None:
    default = open_store("sqlite", tmp_path)
    assert isinstance(default, SqliteStore) and default.path == tmp_path / "state.db"
    explicit = open_store(f"sqlite://{tmp_path}/x.db?synchronous=normal", "/unused")
    assert isinstance(explicit, SqliteStore)
    assert (explicit.path, explicit.synchronous) == (tmp_path / "x.db", "NORMAL")
    etcd = open_store("etcd://10.0.0.1:2379,10.0.0.2:2379/pinnace", tmp_path)
    assert isinstance(etcd, EtcdStore)
    assert (etcd.endpoints, etcd.prefix) == (["10.0.0.1:2379", "10.0.0.2:2379"], "/pinnace")
    assert open_store("etcd://h:2379", tmp_path).prefix == ""
    assert open_store("etcd://h1,h2:4001", tmp_path).endpoints == ["h1:2379", "h2:4001"]
    for bad in ["mysql://x", "sqlite://relative.db", "etcd://"]:
        with pytest.raises(StoreError):
            open_store(bad, tmp_path)


def test_invalid_json_is_a_clear_error() -> None:
    from pinnace.store import CorruptValue, decode_json

    assert decode_json("/registry/pods/a", b'{"kind":"Pod"}') == {"kind": "Pod"}
    with pytest.raises(CorruptValue, match=r"'/registry/pods/a' is not valid JSON.*delete the key"):
        decode_json("/registry/pods/a", b'{"kind":')
