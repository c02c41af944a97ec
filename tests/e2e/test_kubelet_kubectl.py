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


async def test_kubectl_logs_previous_of_a_restarted_container(client, kubelet, kubectl_async):
    await client.create(
        "v1/pods", pod("phoenix", [container("c", "sh", "-c", "echo run $(date +%N); sleep 0.3; exit 1")], nodeName=kubelet.node_name)
    )
    await wait_for(client, "phoenix", lambda p: (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1)
    code, out, err = await kubectl_async("logs", "phoenix", "--previous")
    assert code == 0, err
    assert out.startswith("run ")


async def test_image_change_restarts_the_container(client, kubelet):
    await running(client, kubelet, "img", container("c", "sleep", "60"))
    await client.patch("v1/pods", "img", {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}, namespace="default", patch_type="strategic")
    p = await wait_for(client, "img", lambda p: p["status"]["containerStatuses"][0]["image"] == "busybox:2" and "running" in p["status"]["containerStatuses"][0]["state"])
    events = [e["message"] for e in (await client.list("v1/events", namespace="default"))["items"] if e["involvedObject"]["name"] == "img"]
    assert p["status"]["containerStatuses"][0]["restartCount"] >= 1, events
    assert any("definition changed" in message for message in events)


async def test_python_client_exec_and_port_forward_over_websocket(client, kubelet, kubeconfig):
    """The official Python client speaks the WebSocket channel protocols (exec, and port-forward with ?ports=)."""
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import portforward, stream

    port = 9000 + os.getpid() % 500
    await running(
        client, kubelet, "pyclient",
        container("c", PY, "-c", SERVER_ONCE, str(port)),
        hostNetwork=os.geteuid() != 0,
    )

    def use_client() -> tuple[str, bytes]:
        api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        core = kubernetes.client.CoreV1Api(api_client)
        out = stream(
            core.connect_get_namespaced_pod_exec, "pyclient", "default",
            command=["sh", "-c", "echo from-exec"], stderr=True, stdin=False, stdout=True, tty=False,
        )
        forward = portforward(core.connect_get_namespaced_pod_portforward, "pyclient", "default", ports=str(port))
        sock = forward.socket(port)
        sock.settimeout(10)
        data = b""
        while len(data) < 5:
            chunk = sock.recv(100)
            if not chunk:
                break
            data += chunk
        sock.close()
        forward.close()
        api_client.close()
        return out, data

    out, data = await asyncio.to_thread(use_client)
    assert out.strip() == "from-exec"
    assert data.startswith(b"hello")


SERVER_ONCE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"hello"); c.close()
"""


async def test_exec_with_a_terminal_over_websocket(client, kubelet, api_server):
    import aiohttp

    await running(client, kubelet, "tty", container("c", "sleep", "60"))
    url = (
        f"{api_server.insecure_url}/api/v1/namespaces/default/pods/tty/exec"
        "?command=sh&command=-c&command=sleep+0.3%3B+test+-t+1+%26%26+stty+size&stdin=true&stdout=true&tty=true"
    )
    output = b""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
        await ws.send_bytes(b"\x04" + b'{"Width":100,"Height":30}')
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x01":
                output += message.data[1:]
            elif message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x03":
                assert b"Success" in message.data
    assert output.strip() == b"30 100"


async def test_kubelet_api_accepts_only_the_api_servers_client_certificate(client, api_server, kubectl_async, tmp_path):
    import ssl

    import aiohttp

    from pinnace.apiserver.node_proxy import kubelet_get

    guarded = Kubelet(client, kubelet_config(tmp_path / "guarded", client_ca_file=str(api_server.ca_path)))
    await guarded.start()
    try:
        await running(client, guarded, "guarded", container("c", "sh", "-c", "echo guarded; sleep 60"))
        await asyncio.sleep(0.3)
        code, out, err = await kubectl_async("logs", "guarded")
        assert (code, out) == (0, "guarded\n"), err
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"https://127.0.0.1:{guarded.port}/pods", ssl=insecure) as response:
                    response.raise_for_status()
        from pinnace.apiserver import certs

        ca_cert, ca_key = certs.load_ca(api_server.certs)
        other_cert, other_key = certs.issue(ca_cert, ca_key, "someone-else")
        (tmp_path / "other.crt").write_bytes(other_cert)
        (tmp_path / "other.key").write_bytes(other_key)
        other = ssl.create_default_context()
        other.check_hostname = False
        other.verify_mode = ssl.CERT_NONE
        other.load_cert_chain(str(tmp_path / "other.crt"), str(tmp_path / "other.key"))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{guarded.port}/pods", ssl=other) as response:
                assert response.status == 403
        node = await client.get("v1/nodes", guarded.node_name)
        cert = api_server.ca_path.parent / "kubelet-client.crt"
        summary = await kubelet_get(node, "/stats/summary", client_cert=str(cert), client_key=str(cert.with_suffix(".key")))
        assert summary["node"]["nodeName"] == guarded.node_name
        assert summary["pods"][0]["podRef"]["name"] == "guarded"
    finally:
        await stop_and_clean(guarded)
