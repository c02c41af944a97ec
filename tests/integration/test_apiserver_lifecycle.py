"""Stopping the API server while watches are open: prompt, and quiet afterwards."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from pinnace.apiserver.server import ApiServer, ServerConfig


@pytest.fixture
async def server(tmp_path):
    instance = ApiServer(ServerConfig(data_dir=tmp_path / "server", port=0, bind_address="127.0.0.1", insecure_port=0))
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


async def test_stop_with_open_watches_returns_promptly_and_quietly(server, caplog):
    caplog.set_level(logging.WARNING)
    url = server.insecure_url
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def rewatch_forever() -> None:
            # As an informer does: a watch that ends is opened again at once.
            while True:
                try:
                    async with session.get(f"{url}/api/v1/configmaps?watch=true") as response:
                        statuses.append(response.status)
                        async for _line in response.content:
                            pass
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)

        async def never_read() -> None:
            # A watcher that stops reading: its handler ends up blocked writing to it, and that must
            # not hold the shutdown.
            async with session.get(f"{url}/api/v1/secrets?watch=true") as response:
                statuses.append(response.status)
                await asyncio.sleep(3600)

        watchers = [asyncio.create_task(rewatch_forever()), asyncio.create_task(never_read())]
        for _ in range(100):
            if len(server.watchers) >= 2:
                break
            await asyncio.sleep(0.02)
        assert len(server.watchers) >= 2
        filler = {"apiVersion": "v1", "kind": "Secret", "stringData": {"blob": "x" * 200_000}}
        for number in range(60):  # 12 MB of events: more than the socket buffers hold
            secret = {**filler, "metadata": {"name": f"blob-{number}"}}
            async with session.post(f"{url}/api/v1/namespaces/default/secrets", json=secret) as response:
                assert response.status == 201
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await server.stop()
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)  # a cache left following the closed store would log here
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    assert elapsed < 1.0, f"stop() took {elapsed:.2f}s"
    assert set(statuses) <= {200, 503}
    noisy = [r.getMessage() for r in caplog.records if "is closed" in r.getMessage() or r.levelno >= logging.ERROR]
    assert noisy == []
