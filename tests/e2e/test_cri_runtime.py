"""The cri runtime through the Runtime protocol: a busybox httpd pod, exec, port-forward, stats, an
OOM kill, a missing image, and adoption of running containers by a new runtime instance."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest

from pinnace.kubelet.runtime.base import ContainerConfig, ContainerState, PodSandboxConfig, RuntimeFailure
from pinnace.kubelet.runtime.cri import CriRuntime, remove_cgroup_tree
from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(not shutil.which("containerd"), reason="containerd is not installed"),
]

IMAGE = "pinnace.test/httpd:1"


@pytest.fixture
async def runtime(tmp_path: Path):
    suffix = uuid.uuid4().hex[:6]
    runtime = CriRuntime(data_dir=str(tmp_path), pod_cidr="10.88.232.0/24", bridge=f"pnr{suffix}",
                         cgroup_root=f"/pinnace-test-{suffix}")
    await runtime.start()
    archive = tmp_path / "httpd.tar"
    build_busybox_image(IMAGE, archive, tmp_path / "build",
                        ImageConfig(cmd=["httpd", "-f", "-p", "8080", "-h", "/var/www"]),
                        files={"/var/www/index.html": "hello from a real container\n"})
    assert runtime.containerd is not None
    await runtime.containerd.import_archive(archive)
    try:
        yield runtime
    finally:
        for sandbox in await runtime.list_pod_sandboxes():
            await runtime.stop_pod_sandbox(sandbox.id)
            await runtime.remove_pod_sandbox(sandbox.id)
        await runtime.close()
        os.system(f"ip link del pnr{suffix} 2>/dev/null")
        remove_cgroup_tree(runtime.cgroup_root)


async def run_pod(runtime: CriRuntime, tmp_path: Path, name: str, config: ContainerConfig) -> tuple[str, str]:
    sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name=name, namespace="default", uid=uuid.uuid4().hex,
                                                             log_directory=str(tmp_path / "logs" / name)))
    await runtime.ensure_image(config.image, "IfNotPresent")
    container = await runtime.create_container(sandbox, config)
    await runtime.start_container(container)
    return sandbox, container


async def test_httpd_image_serves_on_its_pod_ip_and_forwards_ports(runtime: CriRuntime, tmp_path: Path) -> None:
    sandbox, container = await run_pod(runtime, tmp_path, "web", ContainerConfig(name="web", image=IMAGE, command=[]))
    status = await runtime.pod_sandbox_status(sandbox)
    assert status is not None and status.ip and status.ip.startswith("10.88.232.")
    body = b""
    for _ in range(50):  # httpd needs a moment to listen
        try:
            reader, writer = await runtime.port_forward(sandbox, 8080)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        body = await reader.read()
        writer.close()
        break
    assert b"hello from a real container" in body

    process = await runtime.exec(container, ["sh", "-c", "echo $((6 * 7)); cat /etc/hostname"], stdin=False, tty=False)
    out, _ = await process.communicate()
    assert process.returncode == 0 and out.split()[0] == b"42"

    code, stdout, _ = await runtime.exec_sync(container, ["ls", "/"], timeout=5)
    assert code == 0 and b"var" in stdout and b"home" not in stdout  # the image's file system, not the host's

    container_status = await runtime.container_status(container)
    assert container_status is not None and container_status.state == ContainerState.RUNNING
    stats = await runtime.container_stats(container)
    assert stats["memory_working_set_bytes"] > 0

    # A second runtime on the same containerd (an agent restart) finds the pod and its container.
    again = CriRuntime(data_dir=str(tmp_path), pod_cidr="10.88.232.0/24", endpoint=runtime.endpoint)
    await again.start()
    try:
        assert sandbox in [s.id for s in await again.list_pod_sandboxes()]
        assert container in [c.id for c in await again.list_containers(sandbox)]
    finally:
        await again.close()

    await runtime.stop_container(container, timeout=2)
    stopped = await runtime.container_status(container)
    assert stopped is not None and stopped.state == ContainerState.EXITED


async def test_memory_limit_is_enforced_as_an_oom_kill(runtime: CriRuntime, tmp_path: Path) -> None:
    config = ContainerConfig(name="hog", image=IMAGE, memory_limit_bytes=16 * 1024 * 1024,
                             command=["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo done"])
    _, container = await run_pod(runtime, tmp_path, "hog", config)
    await asyncio.wait_for(runtime.wait_container(container), timeout=30)
    status = await runtime.container_status(container)
    assert status is not None and status.state == ContainerState.EXITED
    assert status.reason == "OOMKilled" and status.exit_code == 137


async def test_a_missing_image_fails_with_err_image_pull(runtime: CriRuntime) -> None:
    with pytest.raises(RuntimeFailure) as failure:
        await runtime.ensure_image("127.0.0.1:1/nothing/here:v1", "IfNotPresent")
    assert failure.value.reason == "ErrImagePull"
    assert "nothing/here" in str(failure.value)
    with pytest.raises(RuntimeFailure) as never:
        await runtime.ensure_image("pinnace.test/absent:1", "Never")
    assert never.value.reason == "ErrImageNeverPull"


@pytest.mark.parametrize("with_credentials", [False, True])
async def test_images_are_pulled_from_a_local_registry(runtime: CriRuntime, tmp_path: Path, with_credentials: bool) -> None:
    from tests.fixtures.registry import run_registry

    archive = tmp_path / "httpd.tar"  # built by the fixture
    credentials = ("puller", "s3cret") if with_credentials else (None, None)
    with run_registry(tmp_path / "registry", *credentials) as registry:
        reference = registry.push(archive, "demo/httpd:2")
        if with_credentials:
            with pytest.raises(RuntimeFailure) as denied:
                await runtime.ensure_image(reference, "Always")
            assert denied.value.reason == "ErrImagePull"
            docker_config = {"auths": {registry.host: {"username": "puller", "password": "s3cret"}}}
            image_id = await runtime.ensure_image(reference, "Always", [docker_config])
        else:
            image_id = await runtime.ensure_image(reference, "IfNotPresent")
        assert image_id
        names = [name for image in await runtime.list_images() for name in image["names"]]
        assert reference in names
