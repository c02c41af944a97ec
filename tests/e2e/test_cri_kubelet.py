"""The node agent with the cri runtime against a real API server: real containers from real images.

A Deployment pulled from a local registry (with an image pull Secret) and reached on its pod IPs;
kubectl exec, logs -f and port-forward; sidecars sharing localhost and an emptyDir; a missing image
(ErrImagePull, then ImagePullBackOff); an OOM kill; an agent restart that adopts running containers;
containerd killed and restarted by the agent's supervisor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from pinnace.kubelet.agent import Kubelet
from pinnace.kubelet.runtime.cri import remove_cgroup_tree, remove_cri_node
from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image
from pinnace.kubelet.testing import condition, container_status, free_port, kubelet_config, pod, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(not shutil.which("containerd") or not shutil.which("runc"),
                       reason="containerd and runc are not installed"),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed"),
]

HTTPD = "pinnace.test/httpd:1"
BUSYBOX = "pinnace.test/busybox:1"


@pytest.fixture
def streaming_subresources_routed(api_server):
    from pinnace.api.kinds import SubresourceInfo

    pods = api_server.kinds.by_resource("v1/pods")
    for name in ("exec", "attach", "portforward"):
        if name not in pods.subresources:
            pods.subresources[name] = SubresourceInfo(name, "", "v1", "Pod", ("create", "get"))


@pytest.fixture
def kubectl_async(kubeconfig, tmp_path, streaming_subresources_routed):
    """kubectl as an asyncio subprocess: the node agent under test runs on this test's event loop."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}

    async def run(*args: str, timeout: float = 30, wait: bool = True):
        process = await asyncio.create_subprocess_exec(
            "kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'cache'}", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        if not wait:
            return process
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        return process.returncode or 0, out.decode(), err.decode()

    return run


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    httpd = tmp_path / "images" / "httpd.tar"
    build_busybox_image(HTTPD, httpd, tmp_path / "images" / "httpd-build",
                        ImageConfig(cmd=["httpd", "-f", "-p", "8080", "-h", "/var/www"]),
                        files={"/var/www/index.html": "hello from a real container\n"})
    busybox = tmp_path / "images" / "busybox.tar"
    build_busybox_image(BUSYBOX, busybox, tmp_path / "images" / "busybox-build", ImageConfig(cmd=["sh"]))
    return {HTTPD: httpd, BUSYBOX: busybox}


def cri_config(tmp_path: Path, **overrides):
    suffix = uuid.uuid4().hex[:6]
    return kubelet_config(tmp_path / "node", runtime="cri", bridge=f"pnc{suffix}",
                          pod_cidr=f"10.89.{random.randrange(1, 250)}.0/24", **overrides)


async def start_node(client, config, images: dict[str, Path] | None = None) -> Kubelet:
    kubelet = Kubelet(client, config)
    await kubelet.start()
    for archive in (images or {}).values():
        await kubelet.runtime.containerd.import_archive(archive)
    return kubelet


async def remove_node(kubelet: Kubelet) -> None:
    """Remove every pod, the bridge, containerd, its shims and the node's cgroups."""
    runtime = kubelet.runtime
    socket_path = runtime.containerd.socket
    try:
        if runtime.channel is None:
            # The agent was stopped and left its pods running (a test failed before starting another):
            # remove them as `pinnace down` does after a lost agent.
            await remove_cri_node(str(kubelet.config.data_dir), runtime.bridge, runtime.cgroup_root)
        else:
            await kubelet.stop(remove_pods=True)
    finally:
        for process in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if socket_path in " ".join(process.info["cmdline"] or []):
                    process.send_signal(signal.SIGKILL)
        os.system(f"ip link del {runtime.bridge} 2>/dev/null")
        # Whatever a failed test left running in the node's cgroups, then the cgroups themselves.
        for procs in Path("/sys/fs/cgroup/memory", runtime.cgroup_root.strip("/")).rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
        await asyncio.sleep(0.2)
        remove_cgroup_tree(runtime.cgroup_root)


@pytest.fixture
async def node(client, tmp_path, images):
    kubelet = await start_node(client, cri_config(tmp_path), images)
    try:
        yield kubelet
    finally:
        await remove_node(kubelet)


def ready(p: dict) -> bool:
    return p["status"].get("phase") == "Running" and condition(p, "Ready") == "True"


async def http_get(host: str, port: int, path: str = "/") -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.read().decode()

    for _ in range(50):  # the server needs a moment to listen
        try:
            return await asyncio.to_thread(get)
        except OSError:
            await asyncio.sleep(0.1)
    return await asyncio.to_thread(get)


async def test_deployment_from_a_registry_on_pod_ips_with_exec_and_port_forward(client, tmp_path, images, kubectl_async):
    from tests.fixtures.registry import run_registry

    from pinnace.controllers.manager import ControllerManager

    if not shutil.which("docker-registry") or not shutil.which("skopeo"):
        pytest.skip("docker-registry and skopeo are not installed")
    kubelet = await start_node(client, cri_config(tmp_path, status_seconds=1))  # nothing imported: images come from the registry
    manager = ControllerManager(client, controllers=["replicaset", "deployment"], leader_elect=False)
    await manager.start()
    try:
        with run_registry(tmp_path / "registry", "puller", "s3cret") as registry:
            reference = await asyncio.to_thread(registry.push, images[HTTPD], "demo/httpd:1")
            auth = {"auths": {registry.host: {"auth": base64.b64encode(b"puller:s3cret").decode()}}}
            await client.create("v1/secrets", {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull", "namespace": "default"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(json.dumps(auth).encode()).decode()},
            }, namespace="default")
            labels = {"app": "web"}
            await client.create("apps/v1/deployments", {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"nodeName": kubelet.node_name, "imagePullSecrets": [{"name": "pull"}],
                             "containers": [{"name": "httpd", "image": reference,
                                             "readinessProbe": {"exec": {"command": ["wget", "-qO-", "http://127.0.0.1:8080/"]},
                                                                "periodSeconds": 1}}]}}},
            }, namespace="default")
            pods: list[dict] = []
            for _ in range(300):
                listed = (await client.list("v1/pods", namespace="default", label_selector="app=web"))["items"]
                pods = [p for p in listed if ready(p)]
                if len(pods) == 2:
                    break
                await asyncio.sleep(0.1)
            assert len(pods) == 2, [p.get("status") for p in listed]
        for p in pods:  # pulled from a registry: imageID is the repo digest, as containerd reports it
            assert container_status(p, "httpd")["imageID"].startswith(reference.rsplit(":", 1)[0] + "@sha256:")
        ips = {p["status"]["podIP"] for p in pods}
        assert len(ips) == 2 and all(ipaddress.ip_address(ip) in ipaddress.ip_network(kubelet.config.pod_cidr) for ip in ips)
        for ip in ips:
            assert "hello from a real container" in await http_get(ip, 8080)

        events = (await client.list("v1/events", namespace="default"))["items"]
        reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == pods[0]["metadata"]["name"]}
        assert {"Pulled", "Created", "Started"} <= reasons
        for _ in range(50):  # status.images comes with the next full node status
            node = await client.get("v1/nodes", kubelet.node_name)
            if any(reference in i["names"] for i in node["status"].get("images") or []):
                break
            await asyncio.sleep(0.1)
        assert any(reference in i["names"] for i in node["status"].get("images") or []), node["status"].get("images")

        name = pods[0]["metadata"]["name"]
        code, out, err = await kubectl_async("exec", name, "--", "sh", "-c", "echo $((6 * 7)); ls /; exit 3")
        assert code == 3, err
        assert out.split()[0] == "42" and "var" in out.split() and "home" not in out.split()

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        forward = await kubectl_async("port-forward", f"pod/{name}", f"{local}:8080", wait=False)
        try:
            line = await asyncio.wait_for(forward.stdout.readline(), 20)
            assert b"Forwarding from" in line, line
            assert "hello from a real container" in await http_get("127.0.0.1", local)
        finally:
            forward.terminate()
            await forward.wait()
    finally:
        await manager.stop()
        await remove_node(kubelet)


async def test_sidecars_share_localhost_and_an_empty_dir_and_logs_follow(client, node, kubectl_async):
    volume = [{"name": "shared", "mountPath": "/shared"}]
    host_port = free_port()
    await client.create("v1/pods", pod("pair", [
        {"name": "web", "image": HTTPD, "args": ["httpd", "-f", "-p", "8080", "-h", "/shared"], "volumeMounts": volume,
         "ports": [{"containerPort": 8080, "hostPort": host_port}]},
        {"name": "writer", "image": BUSYBOX, "volumeMounts": volume, "command": ["sh", "-c"],
         "args": ["echo from-the-writer > /shared/index.html; sleep 1; "
                  "while true; do wget -qO- http://localhost:8080/index.html; sleep 1; done"]},
    ], nodeName=node.node_name, volumes=[{"name": "shared", "emptyDir": {}}]), namespace="default")
    await wait_for(client, "pair", ready, timeout=30)
    follower = await kubectl_async("logs", "-f", "pair", "-c", "writer", wait=False)
    try:
        line = await asyncio.wait_for(follower.stdout.readline(), 20)
        assert line.decode().strip() == "from-the-writer"  # served by the other container over localhost
    finally:
        follower.terminate()
        await follower.wait()
    code, out, err = await kubectl_async("logs", "pair", "-c", "writer", "--tail=1", "--timestamps")
    assert code == 0 and out.startswith("20") and out.strip().endswith("from-the-writer"), err
    # The hostPort, on the node's address on the pod bridge.
    gateway = str(next(ipaddress.ip_network(node.config.pod_cidr).hosts()))
    assert "from-the-writer" in await http_get(gateway, host_port, "/index.html")


async def test_missing_image_backs_off_oom_is_reported_and_security_context_holds(client, node):
    missing = "127.0.0.1:1/nothing/here:v1"
    node.config.backoff_initial, node.config.backoff_max = 3.0, 6.0  # long enough to see ErrImagePull first
    await client.create("v1/pods", pod("missing", [{"name": "c", "image": missing}], nodeName=node.node_name),
                        namespace="default")
    hog = {"name": "hog", "image": BUSYBOX, "resources": {"limits": {"memory": "16Mi"}},
           "command": ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo done"]}
    await client.create("v1/pods", pod("hog", [hog], nodeName=node.node_name, restartPolicy="Never"), namespace="default")
    locked = {"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"],
              "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                  "capabilities": {"drop": ["ALL"]}}}
    await client.create("v1/pods", pod("locked", [locked], nodeName=node.node_name,
                                       securityContext={"runAsUser": 1000, "runAsGroup": 3000}), namespace="default")
    await client.create("v1/pods", pod("rooted", [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}],
                                       nodeName=node.node_name, securityContext={"runAsNonRoot": True}), namespace="default")

    seen: set[str] = set()

    def waiting(p: dict) -> bool:
        state = container_status(p, "c").get("state", {}).get("waiting", {})
        seen.add(state.get("reason", ""))
        return "ErrImagePull" in seen and state.get("reason") == "ImagePullBackOff"

    stuck = await wait_for(client, "missing", waiting, timeout=20)
    message = container_status(stuck, "c")["state"]["waiting"]["message"]
    assert f'Back-off pulling image "{missing}"' in message and "nothing/here" in message

    running = await wait_for(client, "locked", ready, timeout=30)
    container_id = container_status(running, "c")["containerID"].split("://", 1)[1]
    _, out, _ = await node.runtime.exec_sync(container_id, ["sh", "-c", "id -u; id -g; touch /x || echo read-only"], 10)
    assert out.decode().split() == ["1000", "3000", "read-only"]
    refused = await wait_for(client, "rooted", lambda p: "waiting" in container_status(p, "c").get("state", {})
                             and container_status(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError")
    assert "runAsNonRoot and image will run as root" in container_status(refused, "c")["state"]["waiting"]["message"]

    done = await wait_for(client, "hog", lambda p: p["status"].get("phase") == "Failed", timeout=30)
    terminated = container_status(done, "hog")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


async def test_agent_restart_adopts_containers_and_containerd_is_restarted(client, tmp_path, images):
    config = cri_config(tmp_path)
    kubelet = await start_node(client, config, images)
    try:
        await client.create("v1/pods", pod("keep", [{"name": "web", "image": HTTPD}], nodeName=kubelet.node_name),
                            namespace="default")
        before = await wait_for(client, "keep", ready, timeout=30)
        await kubelet.stop()  # the agent goes away, and its containerd with it; the containers stay
        assert "hello" in await http_get(before["status"]["podIP"], 8080)

        kubelet = await start_node(client, config)
        await asyncio.sleep(1.5)
        after = await client.get("v1/pods", "keep", namespace="default")
        status = container_status(after, "web")
        assert status["restartCount"] == 0 and "running" in status["state"]
        assert status["containerID"] == container_status(before, "web")["containerID"]
        assert after["status"]["podIP"] == before["status"]["podIP"]

        process = kubelet.runtime.containerd.process
        process.kill()  # containerd dies; the supervisor brings it back and the pod keeps running
        await client.create("v1/pods", pod("later", [{"name": "web", "image": HTTPD}], nodeName=kubelet.node_name),
                            namespace="default")
        later = await wait_for(client, "later", ready, timeout=30)
        assert kubelet.runtime.containerd.process is not process
        assert "hello" in await http_get(later["status"]["podIP"], 8080)
        assert "hello" in await http_get(before["status"]["podIP"], 8080)
        kept = await client.get("v1/pods", "keep", namespace="default")
        assert container_status(kept, "web")["containerID"] == container_status(before, "web")["containerID"]
    finally:
        await remove_node(kubelet)
