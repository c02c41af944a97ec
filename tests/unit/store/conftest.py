"""Store fixtures: `store` is parametrized over both backends, so every test using it is conformance."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.fixtures.etcd import ETCD, EtcdCluster, etcd, etcd_cluster, etcd_session  # noqa: F401

from pinnace.store import Store, open_store

BACKENDS = ["sqlite", "etcd"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "etcd" and ETCD is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server)")
    return request.param


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL for a fresh, empty store: its own SQLite file, or its own prefix in the session's etcd."""
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_session")
    return cluster.store_url(f"/t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def make_store(store_url: str, tmp_path: Path) -> Callable[[], Store]:
    """Opens another (unstarted) handle on the same store: for restart tests."""
    return lambda: open_store(store_url, tmp_path)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    s = make_store()
    await s.start()
    try:
        yield s
    finally:
        await s.close()
