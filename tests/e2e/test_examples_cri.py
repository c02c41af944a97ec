"""examples/guestbook-cri on `pinnace up --runtime cri`: real containers from a locally built image.

The user's path, command by command: a cluster in the background with the cri runtime, the busybox
image built from this machine's busybox-static and imported with `pinnace images busybox`, the
manifests applied with kubectl, an entry posted to the frontend's Service and read back through
another request (any of the three frontend pods answers, each asking the backend through its
Service), and `pinnace down --purge` leaving no process behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tests.fixtures.up_cluster import up_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd and the Service's iptables rules need root"),
    pytest.mark.skipif(not shutil.which("containerd") or not shutil.which("runc"),
                       reason="containerd and runc are not installed"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static is not installed"),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed"),
    pytest.mark.timeout(300),
]


def http(method: str, url: str, data: str | None = None, attempts: int = 30) -> str:
    """curl with retries: the proxy programs a new Service within about a second."""
    argv = ["curl", "-s", "-f", "-m", "5", "-X", method, url] + (["--data", data] if data else [])
    for _ in range(attempts):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.5)
    raise AssertionError(f"{method} {url}: curl exit {result.returncode} {result.stderr}")


def test_guestbook_on_containers() -> None:
    # containerd's socket lives under the node's data dir, and a unix socket path has at most 104 bytes:
    # pytest's tmp_path is too deep for it.
    with tempfile.TemporaryDirectory(prefix="pncri-", dir="/tmp") as tmp, up_cluster(Path(tmp), runtime="cri") as up:
        imported = up.pinnace("images", "busybox", "--data-dir", str(up.data_dir)).stdout
        assert "imported" in imported and "busybox" in imported, imported
        up.kubectl("apply", "-f", "examples/guestbook-cri/")
        for name in ("kv", "frontend"):
            up.kubectl("rollout", "status", f"deployment/{name}", "--timeout=180s", timeout=200)
        images = up.kubectl("get", "pods", "-l", "app=guestbook",
                            "-o", "jsonpath={.items[*].status.containerStatuses[*].image}").stdout.split()
        assert len(images) == 4 and all("busybox:local" in image for image in images), images

        frontend = up.kubectl("get", "service", "frontend", "-o", "jsonpath={.spec.clusterIP}").stdout
        assert http("POST", f"http://{frontend}/", "hello containers") == "added\n"
        answer = http("GET", f"http://{frontend}/")
        assert answer.startswith("guestbook v1 from frontend-"), answer
        assert "hello containers" in answer, answer
    assert not up.data_dir.exists()  # --purge removed the data dir
