"""Real kubectl against a real server: what users type and what they see."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: app, image: "nginx:1.27"}
"""

MULTI = """
apiVersion: v1
kind: ConfigMap
metadata: {name: one, labels: {set: multi}}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two, labels: {set: multi}}
data: {b: "2"}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, labels: {app: web, tier: front}}
spec:
  nodeName: node-1
  containers:
  - {name: app, image: "nginx:1.27"}
"""


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"kubectl failed ({result.returncode}): {result.stderr}"
    return result.stdout


def test_api_resources_lists_every_group(kubectl):
    out = ok(kubectl("api-resources"))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert any(line.split()[:3] == ["pods", "po", "v1"] for line in lines)
    assert any(line.split()[:3] == ["deployments", "deploy", "apps/v1"] for line in lines)
    for group in ("batch/v1", "coordination.k8s.io/v1", "rbac.authorization.k8s.io/v1", "apiextensions.k8s.io/v1"):
        assert group in out


def test_create_multi_document_and_get_in_every_format(kubectl):
    assert "configmap/one created" in ok(kubectl("create", "-f", "-", input=MULTI))
    out = ok(kubectl("get", "pods"))
    assert out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out.splitlines()[1].split()[:3] == ["p1", "0/1", "Pending"]
    wide = ok(kubectl("get", "pods", "-o", "wide")).splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert "node-1" in wide[1]
    assert json.loads(ok(kubectl("get", "cm", "one", "-o", "json")))["data"] == {"a": "1"}
    assert "name: two" in ok(kubectl("get", "configmap", "two", "-o", "yaml"))
    names = ok(kubectl("get", "cm", "-l", "set=multi", "-o", "name")).split()
    assert names == ["configmap/one", "configmap/two"]
    out = ok(kubectl("get", "pods", "-A"))
    assert out.splitlines()[1].split()[:2] == ["default", "p1"]
    out = ok(kubectl("get", "pods", "--show-labels"))
    assert "app=web,tier=front" in out
    out = ok(kubectl("get", "pods", "--field-selector", "spec.nodeName=node-1", "-o", "name"))
    assert out.split() == ["pod/p1"]
    assert ok(kubectl("get", "pods", "--field-selector", "spec.nodeName=other")) == ""
    out = ok(kubectl("get", "cm", "--sort-by=.metadata.name", "-l", "set=multi"))
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["one", "two"]
    out = ok(kubectl("get", "cm", "-l", "set in (multi)", "-o", "name"))
    assert out.split() == ["configmap/one", "configmap/two"]


def test_create_json_manifest(kubectl, tmp_path):
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    path = tmp_path / "secret.json"
    path.write_text(json.dumps(manifest))
    assert "secret/s created" in ok(kubectl("create", "-f", str(path)))
    result = kubectl("create", "-f", str(path))
    assert result.returncode == 1
    assert 'Error from server (AlreadyExists): error when creating "' in result.stderr
    assert 'secrets "s" already exists' in result.stderr


def test_imperative_creates(kubectl):
    assert ok(kubectl("create", "namespace", "team")) == "namespace/team created\n"
    assert ok(kubectl("create", "configmap", "cfg", "--from-literal=a=b", "-n", "team")) == "configmap/cfg created\n"
    assert ok(kubectl("create", "secret", "generic", "sec", "--from-literal=a=b")) == "secret/sec created\n"
    assert ok(kubectl("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2")) == "deployment.apps/web created\n"
    deployment = json.loads(ok(kubectl("get", "deploy", "web", "-o", "json")))
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert json.loads(ok(kubectl("get", "cm", "cfg", "-n", "team", "-o", "json")))["data"] == {"a": "b"}


def test_label_annotate_scale_replace(kubectl):
    ok(kubectl("create", "-f", "-", input=DEPLOYMENT))
    assert ok(kubectl("label", "deploy", "web", "env=prod")) == "deployment.apps/web labeled\n"
    result = kubectl("label", "deploy", "web", "env=dev")
    assert result.returncode == 1 and "--overwrite is false" in result.stderr
    assert ok(kubectl("annotate", "deploy", "web", "note=hi")) == "deployment.apps/web annotated\n"
    assert ok(kubectl("scale", "deploy", "web", "--replicas=5")) == "deployment.apps/web scaled\n"
    deployment = json.loads(ok(kubectl("get", "deploy", "web", "-o", "json")))
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["labels"]["env"] == "prod" and deployment["metadata"]["annotations"]["note"] == "hi"
    deployment["spec"]["replicas"] = 1
    assert ok(kubectl("replace", "-f", "-", input=json.dumps(deployment))) == "deployment.apps/web replaced\n"
    assert json.loads(ok(kubectl("get", "deploy", "web", "-o", "json")))["spec"]["replicas"] == 1


def test_delete_by_name_file_label_and_all(kubectl, tmp_path):
    path = tmp_path / "multi.yaml"
    path.write_text(MULTI)
    ok(kubectl("create", "-f", str(path)))
    assert ok(kubectl("delete", "pod", "p1", "--grace-period=0", "--force")).strip().endswith('pod "p1" force deleted')
    assert ok(kubectl("delete", "cm", "-l", "set=multi")) == 'configmap "one" deleted\nconfigmap "two" deleted\n'
    ok(kubectl("create", "-f", str(path)))
    out = ok(kubectl("delete", "-f", str(path), "--grace-period=0", "--force"))
    assert 'configmap "one" force deleted' in out and 'pod "p1" force deleted' in out
    ok(kubectl("create", "configmap", "x"))
    ok(kubectl("create", "configmap", "y"))
    out = ok(kubectl("delete", "cm", "--all"))
    assert 'configmap "x" deleted' in out and 'configmap "y" deleted' in out


def test_delete_waits_for_graceful_pod_deletion(kubectl, api_server):
    ok(kubectl("create", "-f", "-", input=MULTI))
    # Play the node agent: confirm the kill shortly after kubectl starts waiting.
    def confirm() -> None:
        time.sleep(1.5)
        kubectl("delete", "pod", "p1", "--grace-period=0", "--force", "--wait=false")

    agent = threading.Thread(target=confirm)
    agent.start()
    started = time.monotonic()
    out = ok(kubectl("delete", "pod", "p1", "--timeout=20s"))
    agent.join()
    assert out == 'pod "p1" deleted\n'
    assert time.monotonic() - started >= 1.0  # it waited for the DELETED event
    assert kubectl("get", "pod", "p1").returncode == 1


def test_describe_shows_events(kubectl):
    ok(kubectl("create", "-f", "-", input=MULTI))
    pod = json.loads(ok(kubectl("get", "pod", "p1", "-o", "json")))
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "p1.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default", "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
        "reason": "Scheduled",
        "message": "Successfully assigned default/p1 to node-1",
        "type": "Normal",
        "source": {"component": "default-scheduler"},
        "count": 1,
    }
    other = json.loads(json.dumps(event))
    other["metadata"]["name"] = "other.1"
    other["involvedObject"]["name"] = "other"
    other["message"] = "not about p1"
    ok(kubectl("create", "-f", "-", input=json.dumps(event)))
    ok(kubectl("create", "-f", "-", input=json.dumps(other)))
    out = ok(kubectl("describe", "pod", "p1"))
    assert "Name:             p1" in out
    assert "Successfully assigned default/p1 to node-1" in out and "not about p1" not in out


def test_wait_for_condition(kubectl, api_server):
    ok(kubectl("create", "-f", "-", input=MULTI))

    def become_ready() -> None:
        time.sleep(1)
        pod = json.loads(ok(kubectl("get", "pod", "p1", "-o", "json")))
        pod["status"]["phase"] = "Running"
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        import urllib.request

        request = urllib.request.Request(
            f"{api_server.insecure_url}/api/v1/namespaces/default/pods/p1/status",
            data=json.dumps(pod).encode(), method="PUT", headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    agent = threading.Thread(target=become_ready)
    agent.start()
    out = ok(kubectl("wait", "--for=condition=Ready", "pod/p1", "--timeout=20s"))
    agent.join()
    assert out == "pod/p1 condition met\n"


def test_get_watch_prints_changes(kubectl):
    ok(kubectl("create", "configmap", "before"))
    result = {}

    def watch() -> None:
        result["out"] = kubectl("get", "cm", "-w", "--request-timeout=3s", timeout=30)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(1)
    ok(kubectl("create", "configmap", "during"))
    watcher.join()
    lines = result["out"].stdout.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == ["before", "during"]


def test_status_errors_as_kubectl_prints_them(kubectl):
    result = kubectl("get", "pod", "nosuch")
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): pods "nosuch" not found'
    result = kubectl("create", "configmap", "Bad_Name")
    assert result.returncode == 1
    assert result.stderr.startswith(
        'error: failed to create configmap: ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
    )
    result = kubectl("create", "-f", "-", input='{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}')
    assert result.returncode == 1
    assert result.stderr.startswith('The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"')
    result = kubectl("get", "pods", "--field-selector", "spec.bogus=1")
    assert result.returncode == 1 and "Error from server (BadRequest)" in result.stderr
    result = kubectl("get", "pods", "-n", "missing-ns")
    assert result.returncode == 0 and "No resources found in missing-ns namespace." in result.stderr


def test_drain_evicts_pods(kubectl):
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    ok(kubectl("create", "-f", "-", input=json.dumps(node)))
    ok(kubectl("create", "-f", "-", input=MULTI))
    result = kubectl("drain", "node-1", "--force", "--grace-period=0", "--timeout=30s")
    assert result.returncode == 0, result.stderr
    assert "evicting pod default/p1" in result.stdout + result.stderr
    assert "node/node-1 drained" in result.stdout
    node_now = json.loads(ok(kubectl("get", "node", "node-1", "-o", "json")))
    assert node_now["spec"]["unschedulable"] is True


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_other_kubectl_versions(kubectl, version):
    out = ok(kubectl("get", "ns", version=version))
    assert "kube-system" in out
    ok(kubectl("create", "-f", "-", input=DEPLOYMENT, version=version))
    out = ok(kubectl("get", "deploy", version=version))
    assert out.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "deploy" in ok(kubectl("api-resources", version=version))
