"""Several API servers: requests and watches move on to the next server when one cannot be reached."""

from __future__ import annotations

import asyncio

from pinnace.client import Client
from pinnace.client.rest import split_servers

from .fake_apiserver import FakeApiServer, free_port


def test_server_lists_accept_commas_and_lists():
    assert split_servers("https://a:6443, https://b:6443/") == ["https://a:6443", "https://b:6443"]
    assert split_servers(["https://a:1", "https://b:2,https://c:3"]) == ["https://a:1", "https://b:2", "https://c:3"]
    assert Client("https://a:1,https://b:2").servers == ["https://a:1", "https://b:2"]
    assert Client(servers=["https://a:1"]).server == "https://a:1"


async def test_a_write_goes_to_the_next_server_when_the_first_is_down(fake_api: FakeApiServer):
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client(servers=[dead, fake_api.url], qps=None, max_retries=0) as client:
        # POST is not idempotent, yet a connection that was never opened never sent it: safe to send again.
        created = await client.create("v1/configmaps", {"metadata": {"name": "c1"}}, namespace="default")
        assert created["metadata"]["name"] == "c1"
        assert client.server == fake_api.url  # and it stays on the server that answered
        assert (await client.get("v1/configmaps", "c1", namespace="default"))["metadata"]["name"] == "c1"


async def test_a_watch_that_cannot_connect_moves_the_client_on(fake_api: FakeApiServer):
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client(f"{dead},{fake_api.url}", qps=None) as client:
        try:
            async for _ in client.watch("v1/configmaps", namespace="default"):
                break
        except ConnectionError:
            pass
        assert client.server == fake_api.url
        events = client.watch("v1/configmaps", namespace="default", resource_version="0")
        await fake_api.write("ADDED", "v1/configmaps", {"metadata": {"name": "w", "namespace": "default"}})
        event_type, obj = await asyncio.wait_for(anext(events), 5)
        assert (event_type, obj["metadata"]["name"]) == ("ADDED", "w")
        await events.aclose()
