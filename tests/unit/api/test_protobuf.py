"""Protobuf request bodies: bodies captured from kubectl 1.32 decode to the JSON kubectl would send."""

import os

import pytest
from tests.fixtures.kubectl_stub import COMMANDS, KubectlStub, kubectl_132

from pinnace.api import protowire as pw
from pinnace.api.protobuf import ProtobufError, UnsupportedKind, decode_protobuf_body

DATA = os.path.join(os.path.dirname(__file__), "data")

EXPECTED = {
    "namespace": {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "team-a"},
        "spec": {},
        "status": {},
    },
    "deployment": {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    },
    "configmap": {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cfg"},
        "data": {"a": "1", "b": "two"},
    },
    "secret": {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "sec"},
        "data": {"password": "czNjcjN0"},
    },
    "service_clusterip": {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "svc", "labels": {"app": "svc"}},
        "spec": {
            "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": "svc"},
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    },
    "service_nodeport": {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "np", "labels": {"app": "np"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}
            ],
            "selector": {"app": "np"},
            "type": "NodePort",
        },
        "status": {"loadBalancer": {}},
    },
    "job": {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {"name": "once"},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {
                    "containers": [
                        {"name": "once", "image": "busybox", "command": ["echo", "hi"], "resources": {}}
                    ],
                    "restartPolicy": "Never",
                },
            }
        },
        "status": {},
    },
    "cronjob": {
        "kind": "CronJob",
        "apiVersion": "batch/v1",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {
                "metadata": {"name": "tick"},
                "spec": {
                    "template": {
                        "metadata": {},
                        "spec": {
                            "containers": [
                                {"name": "tick", "image": "busybox", "command": ["date"], "resources": {}}
                            ],
                            "restartPolicy": "OnFailure",
                        },
                    }
                },
            },
        },
        "status": {},
    },
    "token": {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {"audiences": ["api"], "expirationSeconds": 3600},
        "status": {},
    },
    "autoscale": {
        "kind": "HorizontalPodAutoscaler",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 2,
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 70,
        },
        "status": {},
    },
    "deleteoptions": {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 5},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_captured_body_decodes_like_its_json(name):
    with open(os.path.join(DATA, f"pb_{name}.bin"), "rb") as f:
        assert decode_protobuf_body(f.read()) == EXPECTED[name]


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = pw.string_field(1, api_version) + pw.string_field(2, kind)
    return b"k8s\x00" + pw.length_delimited(1, type_meta) + pw.length_delimited(2, raw)


def test_zero_pointer_fields_survive_and_zero_scalars_do_not():
    metadata = pw.string_field(1, "web") + pw.string_field(2, "") + pw.varint_field(7, 0)
    spec = pw.varint_field(1, 0) + pw.varint_field(5, 0)  # replicas: 0 (pointer), minReadySeconds: 0
    raw = pw.length_delimited(1, metadata) + pw.length_delimited(2, spec)
    decoded = decode_protobuf_body(_envelope("apps/v1", "Deployment", raw))
    assert decoded == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web"},
        "spec": {"replicas": 0},
    }


def test_times_int_or_strings_and_quantities():
    created = pw.length_delimited(8, pw.varint_field(1, 1700000000))
    container = pw.string_field(1, "c") + pw.length_delimited(
        8,
        pw.length_delimited(
            1, pw.string_field(1, "cpu") + pw.length_delimited(2, pw.string_field(1, "500m"))
        ),
    )
    strategy = pw.length_delimited(
        2, pw.length_delimited(1, pw.varint_field(1, 1) + pw.string_field(3, "25%"))
    )
    template = pw.length_delimited(2, pw.length_delimited(2, container))
    raw = pw.length_delimited(1, pw.string_field(1, "d") + created) + pw.length_delimited(
        2, pw.length_delimited(3, template) + pw.length_delimited(4, strategy)
    )
    decoded = decode_protobuf_body(_envelope("apps/v1", "Deployment", raw))
    assert decoded["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert decoded["spec"]["strategy"] == {"rollingUpdate": {"maxUnavailable": "25%"}}
    assert decoded["spec"]["template"]["spec"]["containers"] == [
        {"name": "c", "resources": {"limits": {"cpu": "500m"}}}
    ]


def test_errors():
    with pytest.raises(ProtobufError):
        decode_protobuf_body(b'{"kind":"Pod"}')
    with pytest.raises(ProtobufError):
        decode_protobuf_body(b"k8s\x00\x0a\xff")
    with pytest.raises(UnsupportedKind):
        decode_protobuf_body(_envelope("v1", "Pod", b""))


@pytest.mark.skipif(kubectl_132() is None, reason="kubectl 1.32 is not installed")
async def test_live_kubectl_132_bodies_decode():
    wanted = ["namespace", "deployment", "service_nodeport", "autoscale"]
    async with KubectlStub() as stub:
        for name in wanted:
            stub.requests.clear()
            code, out = await stub.run_kubectl(kubectl_132(), COMMANDS[name])
            assert code == 0, out
            request = stub.requests[-1]
            assert request["content_type"] == "application/vnd.kubernetes.protobuf"
            assert decode_protobuf_body(request["body"]) == EXPECTED[name]
