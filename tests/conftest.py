"""Fixtures shared by every package's tests.

- `api_server`: a fresh, real `ApiServer` for one test, on free ports of 127.0.0.1 (HTTPS with the
  admin token, plus the plain-HTTP `insecure_url`), with its data dir in the test's tmp dir (other
  `ServerConfig` fields through indirect parametrization). It runs in its own thread and event loop,
  so sync tests (real kubectl, the official `kubernetes` client) and async tests (`pinnace.client`)
  can both use it; talk to it only over HTTP (`api_server.loop` runs coroutines on its loop).
- `kubeconfig`: the path of its admin kubeconfig.
- `kubectl`: runs the real kubectl (1.32 by default; `version="1.27"` for the other installed ones)
  with that kubeconfig and an isolated cache dir; returns the CompletedProcess (text mode).
- `client`: a `pinnace.client.Client` for it (async tests).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pinnace.apiserver.server import ApiServer, ServerConfig


class ServerThread:
    """An ApiServer running on its own event loop in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = ApiServer(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-server", daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=60)
        return self.server

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


def kubectl_path(version: str = "1.32") -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed")
    versioned = Path(os.path.realpath(found)).parent / f"kubectl.{version}"
    if versioned.exists():
        return str(versioned)
    if version == "1.32":
        return found
    pytest.skip(f"kubectl {version} is not installed (looked for {versioned})")
    raise AssertionError("unreachable")


@pytest.fixture
def api_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiServer]:
    """Other ServerConfig fields: `@pytest.mark.parametrize("api_server", [{"event_ttl": 1}], indirect=True)`."""
    settings = {"port": 0, "bind_address": "127.0.0.1", "insecure_port": 0, "event_sweep_interval": 3600.0}
    settings.update(getattr(request, "param", None) or {})
    config = ServerConfig(data_dir=tmp_path / "server", **settings)
    runner = ServerThread(config)
    server = runner.start()
    try:
        yield server
    finally:
        runner.stop()


@pytest.fixture
def kubeconfig(api_server: ApiServer) -> Path:
    return api_server.kubeconfig_path


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    cache_dir = tmp_path / "kube-cache"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(*args: str, input: str | None = None, version: str = "1.32", timeout: float = 60) -> subprocess.CompletedProcess:
        command = [kubectl_path(version), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache_dir}", *args]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
        return subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, env=env)

    return run


@pytest.fixture
async def client(kubeconfig: Path):
    from pinnace.client import Client

    api = await Client.from_kubeconfig(kubeconfig)
    try:
        yield api
    finally:
        await api.close()
