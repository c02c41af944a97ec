"""The `pinnace` CLI against a real cluster (`pinnace up -d`), verb by verb, as a user without kubectl.

apply (stdin with several documents, a JSON file, a directory; created/unchanged/configured), get (the
server's columns, -o name|json|yaml|wide, -l, -A, --show-labels, -w), describe (with events), scale,
rollout status|history|undo, logs (and -f), exec, top, events and delete (-f and -l). kubectl is used
only to cross-check what the CLI did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tests.fixtures.up_cluster import PINNACE, ROOT, UpCluster, eventually, up_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces need root"),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed"),
    pytest.mark.timeout(300),
]

SERVER = ("import http.server, os, sys\n"
          "print('hello from', os.environ['POD_NAME'], 'version', os.environ['VERSION'], flush=True)\n"
          "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), http.server.SimpleHTTPRequestHandler).serve_forever()\n")


def deployment(version: str) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cli-web", "labels": {"app": "cli-web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "cli-web"}},
            "template": {
                "metadata": {"labels": {"app": "cli-web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "web", "image": "web:1", "command": ["python3", "-c", SERVER],
                    "env": [{"name": "VERSION", "value": version},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]},
            },
        },
    }


CONFIGMAPS = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cli-one, labels: {cli: test}}\ndata: {a: '1'}\n"
              "---\n"
              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cli-two, labels: {cli: test}}\ndata: {b: '2'}\n")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    with up_cluster(tmp_path_factory.mktemp("cli")) as cluster:
        yield cluster


def pod_names(up: UpCluster) -> list[str]:
    return up.kubectl("get", "pods", "-l", "app=cli-web", "--field-selector=status.phase=Running",
                      "-o", "jsonpath={.items[*].metadata.name}").stdout.split()


def test_apply_get_describe_delete(up: UpCluster, tmp_path: Path) -> None:
    out = up.pinnace("apply", "-f", "-", stdin=CONFIGMAPS).stdout
    assert out.splitlines() == ["configmap/cli-one created", "configmap/cli-two created"]
    assert up.pinnace("apply", "-f", "-", stdin=CONFIGMAPS).stdout.splitlines() == [
        "configmap/cli-one unchanged", "configmap/cli-two unchanged"]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "web.json").write_text(json.dumps(deployment("v1")))
    (manifests / "one.yaml").write_text(CONFIGMAPS.split("---\n")[0].replace("a: '1'", "a: '10'"))
    out = up.pinnace("apply", "-f", str(manifests)).stdout
    assert "deployment.apps/cli-web created" in out and "configmap/cli-one configured" in out, out
    assert up.kubectl("get", "configmap", "cli-one", "-o", "jsonpath={.data.a}").stdout == "10"

    listing = up.pinnace("get", "configmaps", "-l", "cli=test").stdout.splitlines()
    assert listing[0].split() == ["NAME", "DATA", "AGE"]
    assert [line.split()[0] for line in listing[1:]] == ["cli-one", "cli-two"]
    assert up.pinnace("get", "configmaps", "-l", "cli=test", "-o", "name").stdout.split() == [
        "configmap/cli-one", "configmap/cli-two"]
    as_json = json.loads(up.pinnace("get", "configmap", "cli-two", "-o", "json").stdout)
    assert as_json["data"] == {"b": "2"}
    as_yaml = yaml.safe_load(up.pinnace("get", "configmaps", "-l", "cli=test", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "List" and len(as_yaml["items"]) == 2
    everywhere = up.pinnace("get", "configmaps", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == ["kube-system", "kube-root-ca.crt"] for line in everywhere)
    labelled = up.pinnace("get", "configmap", "cli-one", "--show-labels").stdout.splitlines()
    assert labelled[0].split()[-1] == "LABELS" and labelled[1].split()[-1] == "cli=test"

    up.kubectl("rollout", "status", "deployment/cli-web", "--timeout=120s")
    wide = up.pinnace("get", "pods", "-l", "app=cli-web", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert len(wide) == 3 and all("Running" in line for line in wide[1:]), wide
    described = up.pinnace("describe", "deployment", "cli-web").stdout
    assert "Name:         cli-web" in described and "Events:" in described
    assert "ScalingReplicaSet" in described, described

    out = up.pinnace("delete", "-f", str(manifests / "one.yaml")).stdout
    assert out.strip() == 'configmap "cli-one" deleted'
    out = up.pinnace("delete", "configmaps", "-l", "cli=test").stdout
    assert out.strip() == 'configmap "cli-two" deleted'
    assert up.kubectl("get", "configmaps", "-l", "cli=test", "-o", "name").stdout == ""


def test_watch_prints_new_rows(up: UpCluster) -> None:
    watcher = subprocess.Popen([*PINNACE, "get", "configmaps", "-l", "watch=me", "-w"], env=up.env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # the watch is open before the object exists
        up.kubectl("create", "configmap", "watched", "--from-literal=x=1")
        up.kubectl("label", "configmap", "watched", "watch=me")
        line = watcher.stdout.readline()
        assert line.split()[0] == "watched", line
    finally:
        watcher.kill()
        watcher.wait()
        up.kubectl("delete", "configmap", "watched", check=False)


def test_scale_rollout_logs_exec(up: UpCluster) -> None:
    up.pinnace("apply", "-f", "-", stdin=json.dumps(deployment("v1")))
    assert up.pinnace("scale", "deployment/cli-web", "--replicas=3").stdout.strip() == "deployment.apps/cli-web scaled"
    status = up.pinnace("rollout", "status", "deployment/cli-web", timeout=150).stdout
    assert 'deployment "cli-web" successfully rolled out' in status
    assert up.kubectl("get", "deployment", "cli-web", "-o", "jsonpath={.status.readyReplicas}").stdout == "3"

    pod = pod_names(up)[0]
    def first_line() -> str | None:
        out = up.pinnace("logs", pod).stdout
        return out if "hello from" in out else None

    logs = eventually(first_line, 30, "the first log line")
    assert f"hello from {pod} version v1" in logs
    follower = subprocess.Popen([*PINNACE, "logs", "-f", pod], env=up.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert f"hello from {pod}" in follower.stdout.readline()
    finally:
        follower.kill()
        follower.wait()
    assert up.pinnace("exec", pod, "--", "sh", "-c", "echo $VERSION from $POD_NAME").stdout.strip() == f"v1 from {pod}"

    up.pinnace("apply", "-f", "-", stdin=json.dumps(deployment("v2")))
    up.pinnace("rollout", "status", "deployment/cli-web", timeout=150)
    history = up.pinnace("rollout", "history", "deployment/cli-web").stdout
    revisions = [line.split()[0] for line in history.splitlines() if line.split() and line.split()[0].isdigit()]
    assert revisions == ["1", "2"], history
    assert "rolled back" in up.pinnace("rollout", "undo", "deployment/cli-web").stdout
    up.pinnace("rollout", "status", "deployment/cli-web", timeout=150)
    env = up.kubectl("get", "deployment", "cli-web", "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value}")
    assert env.stdout == "v1"


def test_top_and_events(up: UpCluster) -> None:
    node = up.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout

    def top_nodes() -> str | None:
        result = up.pinnace("top", "nodes", check=False)
        return result.stdout if result.returncode == 0 and node in result.stdout else None

    table = eventually(top_nodes, 60, "node metrics").splitlines()
    assert table[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    pods = up.pinnace("top", "pods", "-A").stdout.splitlines()
    assert pods[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]

    events = up.pinnace("events").stdout
    assert "Scheduled" in events and "ScalingReplicaSet" in events, events
