from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pinnace.client import Client

from .fake_apiserver import FakeApiServer


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def fake_client(fake_api: FakeApiServer) -> AsyncIterator[Client]:
    client = Client(fake_api.url, qps=None)
    client.retry_base = 0.01
    try:
        yield client
    finally:
        await client.close()
