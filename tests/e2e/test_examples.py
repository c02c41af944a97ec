"""The smaller examples under examples/, each applied with kubectl to one `pinnace up -d` cluster.

What each example's comment promises is what is checked: the sidecar reads the app over the pod's
shared localhost and writes into the shared volume; the blue/green Service moves from blue to green
when its selector is patched; the Job completes three times with pi in its logs; the DaemonSet runs
one pod per node, each logging its node's name. (The guestbooks have tests of their own: the README
quickstart and tests/e2e/test_examples_cri.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest
from tests.fixtures.up_cluster import eventually, up_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces and the Service's iptables rules need root"),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with up_cluster(tmp_path_factory.mktemp("examples")) as up:
        yield up.kubectl


def test_sidecar_shares_localhost_and_a_volume(cluster) -> None:
    cluster("apply", "-f", "examples/sidecar/")
    w = cluster("wait", "--for=condition=Ready", "pod/with-sidecar", "--timeout=60s", check=False)
    assert w.returncode == 0, cluster("get", "pod", "with-sidecar", "-o", "yaml").stdout + cluster("get", "events").stdout

    def size() -> str | None:
        result = cluster("exec", "with-sidecar", "-c", "sidecar", "--", "cat", "/shared/last-size", check=False)
        text = result.stdout.strip()
        return text if result.returncode == 0 and text.isdigit() and int(text) > 0 else None

    # The app's directory listing, fetched over 127.0.0.1 by the other container, lands in the volume.
    assert int(eventually(size, 30, "the sidecar's report in the shared volume")) > 0
    cluster("delete", "-f", "examples/sidecar/", "--wait=false")


def test_blue_green_switch_by_selector(cluster) -> None:
    cluster("apply", "-f", "examples/blue-green/")
    for name in ("web-blue", "web-green"):
        cluster("rollout", "status", f"deployment/{name}", "--timeout=120s")
    ip = cluster("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}").stdout

    def answers(expected: str) -> Callable[[], str | None]:
        def probe() -> str | None:
            seen = {subprocess.run(["curl", "-s", "-m", "3", f"http://{ip}/"], capture_output=True,
                                   text=True).stdout.strip() for _ in range(6)}
            return expected if seen == {expected} else None
        return probe

    eventually(answers("blue"), 30, "only blue answering")
    cluster("patch", "service", "web", "-p", '{"spec":{"selector":{"app":"web","version":"green"}}}')
    eventually(answers("green"), 30, "only green answering after the switch")
    cluster("delete", "-f", "examples/blue-green/", "--wait=false")


def test_job_runs_to_completion(cluster) -> None:
    cluster("apply", "-f", "examples/job/")
    cluster("wait", "--for=condition=complete", "job/pi", "--timeout=120s")
    job = cluster("get", "job", "pi", "-o", "jsonpath={.status.succeeded}").stdout
    assert job == "3"
    assert "3.14159265358979" in cluster("logs", "job/pi").stdout


def test_daemonset_runs_on_every_node(cluster) -> None:
    cluster("apply", "-f", "examples/daemonset/")
    cluster("rollout", "status", "daemonset/node-logger", "--timeout=120s")
    nodes = cluster("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    pods = cluster("get", "pods", "-l", "app=node-logger", "-o", "jsonpath={.items[*].spec.nodeName}").stdout.split()
    assert sorted(pods) == sorted(nodes)
    def first_line() -> str | None:
        out = cluster("logs", "ds/node-logger", check=False).stdout
        return out if "alive on" in out else None

    logs = eventually(first_line, 30, "the logger's first line")
    assert f"alive on {pods[0]}" in logs
