"""kubectl logs, exec and port-forward through the API server to a real node agent."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest

from pinnace.kubelet.agent import Kubelet
from pinnace.kubelet.testing import PY, condition, container, kubelet_config, pod, stop_and_clean, wait_for

pytestmark = pytest.mark.e2e


def kubectl_binary(version: str) -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed")
    versioned = Path(os.path.realpath(found)).parent / f"kubectl.{version}"
    if versioned.exists():
        return str(versioned)
    if version == "1.32":
        return found
    pytest.skip(f"kubectl {version} is not installed")
    raise AssertionError("unreachable")


@pytest.fixture
def kubectl_async(kubeconfig, tmp_path):
    """kubectl as an asyncio subprocess: the node agent under test runs on this test's event loop."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    async def run(*args: str, version: str = "1.32", input: bytes | None = None, timeout: float = 30) -> tuple[int, str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
        process = await asyncio.create_subprocess_exec(
            kubectl_binary(version), f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(input), timeout)
        return process.returncode or 0, out.decode(), err.decode()

    return run


@pytest.fixture(autouse=True)
def streaming_subresources_routed(api_server):
    """pods/exec, pods/attach and pods/portforward must be known subresources for the API server to
    route them to the node proxy; add them when the kind registry does not list them yet."""
    from pinnace.api.kinds import SubresourceInfo

    pods = api_server.kinds.by_resource("v1/pods")
    for name in ("exec", "attach", "portforward"):
        if name not in pods.subresources:
            pods.subresources[name] = SubresourceInfo(name, "", "v1", "Pod", ("create", "get"))


@pytest.fixture
async def kubelet(client, tmp_path):
    instance = Kubelet(client, kubelet_config(tmp_path / "node"))
    await instance.start()
    try:
        yield instance
    finally:
        await stop_and_clean(instance)


async def running(client, kubelet, name, *containers_, **spec):
    await client.create("v1/pods", pod(name, list(containers_), nodeName=kubelet.node_name, **spec))
    return await wait_for(client, name, lambda p: p["status"].get("phase") == "Running" and condition(p, "Ready") == "True")


async def test_kubectl_logs_and_logs_follow(client, kubelet, kubectl_async):
    await running(client, kubelet, "talker", container("c", "sh", "-c", "for i in 1 2 3; do echo line $i; done; sleep 1; echo late; sleep 60"))
    await asyncio.sleep(0.3)
    code, out, err = await kubectl_async("logs", "talker")
    assert code == 0, err
    assert out.splitlines()[:3] == ["line 1", "line 2", "line 3"]
    code, out, err = await kubectl_async("logs", "talker", "--tail=1", "--timestamps")
    assert code == 0, err
    assert out.strip().endswith("line 3") and out.startswith("20")
    follower = asyncio.create_task(kubectl_async("logs", "-f", "talker", timeout=20))
    await asyncio.sleep(2.5)
    await client.delete("v1/pods", "talker", namespace="default", grace_period_seconds=1)
    code, out, err = await follower
    assert "late" in out.splitlines()


@pytest.mark.parametrize("version", ["1.32", "1.27"])
async def test_kubectl_exec_with_exit_code_and_stdin(client, kubelet, kubectl_async, version):
    await running(client, kubelet, "shell", container("c", "sleep", "60", env=[{"name": "WHO", "value": "pod"}]))
    code, out, err = await kubectl_async("exec", "shell", "--", "sh", "-c", "echo hello $WHO; echo oops >&2; exit 3", version=version)
    assert (code, out) == (3, "hello pod\n"), err
    assert "oops" in err
    code, out, err = await kubectl_async("exec", "-i", "shell", "--", "sh", "-c", "tr a-z A-Z", input=b"shout\n", version=version)
    assert (code, out) == (0, "SHOUT\n"), err


@pytest.mark.parametrize("version", ["1.32", "1.27"])
async def test_kubectl_port_forward(client, kubelet, kubectl_async, version, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("served from the pod\n")
    port = 8000 + os.getpid() % 1000
    await running(
        client, kubelet, "web",
        container("c", PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", workingDir=str(tmp_path / "www")),
        hostNetwork=os.geteuid() != 0,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    forward = await asyncio.create_subprocess_exec(
        kubectl_binary(version), "port-forward", "pod/web", f"{local}:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(client_kubeconfig(client))},
    )
    try:
        line = await asyncio.wait_for(forward.stdout.readline(), 20)
        assert b"Forwarding from" in line, line
        for _ in range(2):  # two connections over the same session
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert b"served from the pod" in body
    finally:
        forward.terminate()
        await forward.wait()


def client_kubeconfig(client) -> Path:
    return client._kubeconfig_path  # set by the fixture below


@pytest.fixture(autouse=True)
def _remember_kubeconfig(client, kubeconfig):
    client._kubeconfig_path = kubeconfig


async def test_kubectl_attach_streams_output(client, kubelet, kubeconfig, tmp_path):
    await running(client, kubelet, "ticker", container("c", "sh", "-c", "while true; do echo tick; sleep 0.2; done"))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    attach = await asyncio.create_subprocess_exec(
        kubectl_binary("1.32"), "attach", "ticker",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)},
    )
    try:
        line = await asyncio.wait_for(attach.stdout.readline(), 20)
        assert line == b"tick\n"
    finally:
        attach.terminate()
        await attach.wait()
