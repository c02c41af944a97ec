"""The cri node agent's pod statuses and container log rotation, as Kubernetes with containerd shows them.

`containerID` is `containerd://<64 hex>` and `imageID` what containerd's CRI says of the image; a
container that writes fast gets its log file rotated at `containerLogMaxSize`, at most
`containerLogMaxFiles` files are kept (older ones gzipped), and `kubectl logs` (also `-f`) keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import tests.e2e.test_cri_kubelet as cri_kubelet
from cri_api.v1 import api_pb2 as pb
from tests.e2e.test_cri_kubelet import BUSYBOX, pytestmark, ready, remove_node, start_node  # noqa: F401

from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image
from pinnace.kubelet.testing import container_status, kubelet_config, pod, wait_for

# Fixtures shared with the other cri node tests: kubectl on this test's event loop.
kubectl_async = cri_kubelet.kubectl_async
streaming_subresources_routed = cri_kubelet.streaming_subresources_routed

CONTAINER_ID = re.compile(r"^containerd://[0-9a-f]{64}$")
MAX_SIZE = 64 * 1024
MAX_FILES = 3


@pytest.fixture
async def node(client, tmp_path):
    archive = tmp_path / "busybox.tar"
    build_busybox_image(BUSYBOX, archive, tmp_path / "build", ImageConfig(cmd=["sh"]))
    # A short data dir: containerd's socket path must stay under the 108 bytes of a unix socket address.
    data_dir = tempfile.mkdtemp(prefix="pnl", dir="/tmp")
    config = kubelet_config(Path(data_dir) / "node", runtime="cri", bridge=f"pnl{uuid.uuid4().hex[:6]}",
                            pod_cidr=f"10.89.{random.randrange(1, 250)}.0/24", status_seconds=1,
                            container_log_max_size="64Ki", container_log_max_files=MAX_FILES,
                            container_log_monitor_interval=0.5)
    kubelet = await start_node(client, config, {BUSYBOX: archive})
    try:
        yield kubelet
    finally:
        await remove_node(kubelet)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_container_and_image_ids_are_containerds(client, node, kubectl_async):
    await client.create("v1/pods", pod("ids", [{"name": "app", "image": BUSYBOX, "command": ["sleep", "3600"]}],
                                       initContainers=[{"name": "init", "image": BUSYBOX, "command": ["true"]}],
                                       nodeName=node.node_name), namespace="default")
    running = await wait_for(client, "ids", ready, timeout=30)
    app = container_status(running, "app")
    init = running["status"]["initContainerStatuses"][0]
    assert CONTAINER_ID.match(app["containerID"]) and CONTAINER_ID.match(init["containerID"]), (app, init)
    assert init["state"]["terminated"]["containerID"] == init["containerID"]
    assert app["image"] == BUSYBOX  # the spec's image

    # What containerd's CRI says: the repo digest when the image has one, else its id (an imported image).
    image = (await node.runtime.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=BUSYBOX)))).image
    expected = image.repo_digests[0] if image.repo_digests else image.id
    assert expected and app["imageID"] == expected and init["imageID"] == expected
    listing = await asyncio.create_subprocess_exec(
        "ctr", "--address", node.runtime.containerd.socket, "--namespace", "k8s.io", "containers", "info",
        app["containerID"].removeprefix("containerd://"), stdout=asyncio.subprocess.PIPE)
    info, _ = await listing.communicate()
    assert listing.returncode == 0 and BUSYBOX in info.decode()  # the id is containerd's own

    code, out, err = await kubectl_async("describe", "pod", "ids")
    assert code == 0, err
    assert re.search(r"Container ID:\s+containerd://[0-9a-f]{64}", out)
    assert re.search(rf"Image ID:\s+{re.escape(expected)}", out)


def line_numbers(text: str) -> list[int]:
    return [int(match) for match in re.findall(r"^line (\d+) x+$", text, re.MULTILINE)]


async def test_fast_logs_are_rotated_and_kubectl_logs_keeps_working(client, node, kubectl_async):
    # About 1 KiB every 10 ms: a rotation about every second.
    writer = {"name": "writer", "image": BUSYBOX, "env": [{"name": "PAD", "value": "x" * 100}],
              "command": ["sh", "-c", 'i=0; while true; do for j in 1 2 3 4 5 6 7 8 9 10; do i=$((i+1)); '
                                      'echo "line $i $PAD"; done; usleep 10000; done']}
    await client.create("v1/pods", pod("rot", [writer], nodeName=node.node_name), namespace="default")
    running = await wait_for(client, "rot", ready, timeout=30)
    current = Path(node.pod_log_dir(running)) / "writer" / "0.log"

    follower = await kubectl_async("logs", "-f", "rot", wait=False)
    try:
        followed = b""
        deadline = time.monotonic() + 30
        seen_max = 0
        compressed = False
        while time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                followed += await asyncio.wait_for(follower.stdout.read(65536), 0.2)
            rotated = sorted(current.parent.glob("0.log.*"))
            seen_max = max(seen_max, 1 + len(rotated))
            compressed = compressed or any(p.suffix == ".gz" for p in rotated)
            if compressed and len(followed) > 4 * MAX_SIZE:
                break
    finally:
        follower.terminate()
        await follower.wait()
    rotated = sorted(current.parent.glob("0.log.*"))
    assert rotated and compressed, sorted(p.name for p in current.parent.iterdir())
    assert seen_max <= MAX_FILES
    assert current.stat().st_size < 4 * MAX_SIZE
    with contextlib.suppress(FileNotFoundError):  # unless removed by a rotation meanwhile
        text = gzip.decompress(next(p for p in rotated if p.suffix == ".gz").read_bytes()).decode()
        assert line_numbers("\n".join(line.split(" ", 3)[3] for line in text.splitlines()))  # CRI lines

    # `-f` went on across several rotations: more than a few files' worth, without a gap.
    numbers = line_numbers(followed.decode())
    assert len(followed) > 4 * MAX_SIZE
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    assert numbers == sorted(numbers) and not missing, missing[:20]

    code, out, err = await kubectl_async("logs", "rot", "--tail=20")
    assert code == 0, err
    tail = line_numbers(out)
    assert tail == list(range(tail[0], tail[0] + 20)) and tail[0] > numbers[-1], (tail, numbers[-1])
    code, out, err = await kubectl_async("logs", "rot")  # the current file only, as in Kubernetes
    assert code == 0 and 0 < len(out) < 4 * MAX_SIZE and line_numbers(out)[0] > 1, err
