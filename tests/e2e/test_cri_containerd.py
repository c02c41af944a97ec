"""containerd as pinnace runs it: its own config, a locally built pause image, a CRI pod with a
busybox container from an imported archive, exec inside it, and clean-up."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from pinnace.kubelet.runtime.containerd import Containerd
from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(not shutil.which("containerd"), reason="containerd is not installed"),
]


def remove_cgroup(parent: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        root = hierarchy / parent.strip("/")
        if root.is_dir():
            for directory in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if directory.is_dir():
                    directory.rmdir()
            root.rmdir()


async def test_cri_pod_runs_a_busybox_container_from_an_imported_archive(tmp_path: Path) -> None:
    grpc = pytest.importorskip("grpc")
    from cri_api.v1 import api_pb2 as pb
    from cri_api.v1 import api_pb2_grpc as rpc

    suffix = uuid.uuid4().hex[:6]
    bridge = f"pnt{suffix}"
    cgroup_parent = f"/pinnace-test-{suffix}"
    containerd = Containerd(tmp_path / "containerd", "10.88.231.0/24", bridge=bridge)
    await containerd.start()
    channel = grpc.aio.insecure_channel(containerd.endpoint)
    try:
        archive = tmp_path / "busybox.tar"
        build_busybox_image("pinnace.test/busybox:1", archive, tmp_path / "build", ImageConfig(cmd=["sh"]))
        await containerd.import_archive(archive)
        runtime = rpc.RuntimeServiceStub(channel)
        version = await runtime.Version(pb.VersionRequest())
        assert version.runtime_name == "containerd"

        sandbox_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="p1", namespace="default", uid=suffix, attempt=0),
            hostname="p1",
            log_directory=str(tmp_path / "logs"),
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{cgroup_parent}/p1"),
        )
        sandbox = await runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config))
        status = await runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox.pod_sandbox_id))
        assert status.status.network.ip.startswith("10.88.231.")

        container_config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c1"),
            image=pb.ImageSpec(image="pinnace.test/busybox:1"),
            command=["sh", "-c", "echo hello from busybox; sleep 60"],
            log_path="c1.log",
        )
        created = await runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sandbox.pod_sandbox_id, config=container_config, sandbox_config=sandbox_config))
        await runtime.StartContainer(pb.StartContainerRequest(container_id=created.container_id))
        result = await runtime.ExecSync(pb.ExecSyncRequest(container_id=created.container_id, cmd=["cat", "/etc/passwd"], timeout=5))
        assert result.exit_code == 0
        # The container's root file system is its image, not the host's.
        assert result.stdout.decode().startswith("root:x:0:0:root:/root:/bin/sh")
        listing = await runtime.ExecSync(pb.ExecSyncRequest(container_id=created.container_id, cmd=["ps"], timeout=5))
        assert "sleep 60" in listing.stdout.decode()
        assert "containerd" not in listing.stdout.decode()  # the host's processes are not visible

        await runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.pod_sandbox_id))
        await runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.pod_sandbox_id))
        log_text = (tmp_path / "logs" / "c1.log").read_text()
        assert "hello from busybox" in log_text
    finally:
        await channel.close()
        await containerd.stop()
        os.system(f"ip link del {bridge} 2>/dev/null")
        remove_cgroup(cgroup_parent)
