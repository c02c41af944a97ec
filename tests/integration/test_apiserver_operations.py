"""Operations: the `pinnace server` command, SIGTERM draining, overload, event expiry."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_server_command_writes_kubeconfig_and_drains_on_sigterm(tmp_path):
    data_dir, port, insecure = tmp_path / "data", free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinnace", "server", "--data-dir", str(data_dir), "--port", str(port),
        "--bind-address", "127.0.0.1", "--insecure-port", str(insecure),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        assert f"https://127.0.0.1:{port}" in banner.decode()
        kubeconfig = data_dir / "kubeconfig.yaml"
        assert kubeconfig.exists() and (kubeconfig.stat().st_mode & 0o777) == 0o600
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{insecure}/api/v1/namespaces?watch=true&resourceVersion=0") as watch:
                first = orjson.loads(await asyncio.wait_for(watch.content.readline(), 10))
                assert first["type"] == "ADDED"
                process.send_signal(signal.SIGTERM)
                rest = await asyncio.wait_for(watch.content.read(), 10)  # the stream ends instead of hanging
                assert rest is not None
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_admin_kubeconfig_works_with_kubectl(kubectl):
    # The fixture's server wrote the same kind of kubeconfig; kubectl reaches it over TLS with the token.
    result = kubectl("get", "namespaces", "-o", "name")
    assert result.returncode == 0 and "namespace/kube-system" in result.stdout


@pytest.mark.parametrize("api_server", [{"max_mutating_requests_inflight": 0}], indirect=True)
async def test_overload_is_429_with_retry_after(api_server):
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as http:
        async with http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "c"}}) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "1"
            assert (await response.json())["reason"] == "TooManyRequests"
        async with http.get("/api/v1/namespaces/default/configmaps") as response:
            assert response.status == 200  # reads have their own budget


@pytest.mark.parametrize("api_server", [{"event_ttl": 0.5, "event_sweep_interval": 0.2}], indirect=True)
async def test_events_expire(api_server):
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
             "reason": "Test", "message": "m", "type": "Normal"}
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as http:
        async with http.post("/api/v1/namespaces/default/events", json=event) as response:
            assert response.status == 201
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with http.get("/api/v1/namespaces/default/events/e1") as response:
                if response.status == 404:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError("the event outlived its time to live")


async def test_pinnace_client_fixture_reaches_the_server(client):
    namespace = await client.get("v1/namespaces", "default")
    assert namespace["status"]["phase"] == "Active"


async def test_many_watchers_share_one_store_watch(api_server):
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as http:
        streams = [await http.get("/api/v1/pods?watch=true&resourceVersion=0&timeoutSeconds=30") for _ in range(50)]
        try:
            async with http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}}):
                pass
            store_watchers = api_server.store.watcher_count()
            # One for pods, one for the namespace table; none per HTTP watcher.
            assert store_watchers <= 3
        finally:
            for stream in streams:
                stream.close()


async def test_cached_objects_follow_writes(api_server):
    async def cached(namespace=None):
        future = asyncio.run_coroutine_threadsafe(api_server.cached_objects("v1/configmaps", namespace), api_server.loop)
        return sorted(o["metadata"]["name"] for o in await asyncio.wrap_future(future))

    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as http:
        async with http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "before"}}):
            pass
        assert await cached() == ["before"]
        async with http.post("/api/v1/namespaces/kube-system/configmaps", json={"metadata": {"name": "after"}}):
            pass
        async with http.delete("/api/v1/namespaces/default/configmaps/before"):
            pass
        for _ in range(50):
            if await cached() == ["after"]:
                break
            await asyncio.sleep(0.02)
        assert await cached() == ["after"]
        assert await cached("default") == []
