"""kubectl 1.32's imperative create commands send protobuf bodies; the server stores what their JSON says."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(180)


def ok(result):
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def get_json(kubectl, *args):
    return json.loads(ok(kubectl("get", *args, "-o", "json")))


def test_imperative_creates_with_protobuf_bodies(kubectl):
    ok(kubectl("create", "namespace", "team-a"))
    assert get_json(kubectl, "namespace", "team-a")["status"]["phase"] == "Active"

    ok(kubectl("create", "deployment", "web", "--image=nginx:1.27", "--port=80", "--replicas=3"))
    dep = get_json(kubectl, "deployment", "web")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP"}
    ]

    ok(kubectl("create", "configmap", "cfg", "--from-literal=a=1"))
    assert get_json(kubectl, "configmap", "cfg")["data"] == {"a": "1"}
    ok(kubectl("create", "secret", "generic", "sec", "--from-literal=password=s3cr3t"))
    assert get_json(kubectl, "secret", "sec")["data"] == {"password": "czNjcjN0"}

    ok(kubectl("create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"))
    port = get_json(kubectl, "service", "np")["spec"]["ports"][0]
    assert (port["port"], port["targetPort"], port["nodePort"]) == (80, 8080, 30080)

    ok(kubectl("create", "job", "once", "--image=busybox", "--", "echo", "hi"))
    job = get_json(kubectl, "job", "once")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    ok(kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *"))
    assert get_json(kubectl, "cronjob", "tick")["spec"]["schedule"] == "*/5 * * * *"

    ok(kubectl("autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=70"))
    hpa = get_json(kubectl, "horizontalpodautoscalers.v1.autoscaling", "web")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
