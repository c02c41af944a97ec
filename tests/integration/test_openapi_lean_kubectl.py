"""kubectl apply computes its strategic merge patches from the lean OpenAPI v3 documents, with no fallback.

kubectl prints `warning: error calculating patch from openapi v3 spec` and falls back to OpenAPI v2
when a lookup in the v3 schema fails; these tests change every kind of field kubectl looks up
(merging lists, retainKeys structs, maps, atomic lists, status) and expect no warning and the
objects a real API server would end with.
"""

from __future__ import annotations

import json

import pytest
import yaml

pytestmark = pytest.mark.timeout(180)


def ok(result) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    assert "warning" not in result.stderr.lower(), result.stderr
    return result.stdout


def manifest(version: int) -> str:
    container = {
        "name": "app",
        "image": f"nginx:1.{24 + version}",
        "env": [{"name": "A", "value": "1"}, {"name": "B" if version == 1 else "C", "value": str(version)}],
        "ports": [{"containerPort": 80}] + ([{"containerPort": 443}] if version == 2 else []),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "resources": {"limits": {"cpu": "1" if version == 1 else "2"}},
    }
    volume = {"name": "data", **({"configMap": {"name": "cfg"}} if version == 1 else {"emptyDir": {}})}
    strategy = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}} if version == 1 else {"type": "Recreate"}
    )
    docs = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "rev": str(version)}},
            "spec": {
                "replicas": 1,
                "strategy": strategy,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [container],
                        "volumes": [volume],
                        "tolerations": [{"key": "k", "operator": "Exists"}] if version == 1 else [],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80 + version}]},
            # Manifests sometimes carry a status: kubectl looks it up, the server ignores it.
            **({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}} if version == 2 else {}),
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "finalizers": ["example.com/keep"] if version == 1 else []},
            "data": {"value": f"v{version}"},
        },
    ]
    return yaml.safe_dump_all(docs)


def test_apply_patches_every_kind_of_field_from_the_lean_document(kubectl, tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text(manifest(1))
    assert "deployment.apps/web created" in ok(kubectl("apply", "-f", str(path)))
    assert ok(kubectl("apply", "-f", str(path))).count("unchanged") == 3
    assert ok(kubectl("diff", "-f", str(path))) == ""

    path.write_text(manifest(2))
    diff = kubectl("diff", "-f", str(path))
    assert diff.returncode == 1 and "warning" not in diff.stderr.lower(), diff.stderr
    assert "nginx:1.26" in diff.stdout
    out = ok(kubectl("apply", "-f", str(path)))
    assert out.count("configured") == 3, out

    deployment = json.loads(ok(kubectl("get", "deployment", "web", "-o", "json")))
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert [(e["name"], e["value"]) for e in container["env"]] == [("A", "1"), ("C", "2")]
    assert sorted(p["containerPort"] for p in container["ports"]) == [80, 443]
    assert container["resources"]["limits"] == {"cpu": "2"}
    assert spec["volumes"] == [{"name": "data", "emptyDir": {}}]  # retainKeys dropped configMap
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # retainKeys dropped rollingUpdate
    assert not spec.get("tolerations")
    assert deployment["metadata"]["labels"] == {"app": "web", "rev": "2"}

    service = json.loads(ok(kubectl("get", "service", "web", "-o", "json")))
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 82)]
    assert service["status"] == {"loadBalancer": {}}
    configmap = json.loads(ok(kubectl("get", "configmap", "cfg", "-o", "json")))
    assert configmap["data"] == {"value": "v2"} and not configmap["metadata"].get("finalizers")
    # The status never sticks, so kubectl keeps sending it, as against Kubernetes.
    assert ok(kubectl("apply", "-f", str(path))).split() == [
        "deployment.apps/web",
        "unchanged",
        "service/web",
        "configured",
        "configmap/cfg",
        "unchanged",
    ]


def test_apply_still_validates_on_the_server(kubectl, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bad"},
                "data": {"a": "b"},
                "foo": 1,
            }
        )
    )
    result = kubectl("apply", "-f", str(path))
    assert result.returncode != 0
    assert "Error from server (BadRequest)" in result.stderr and 'unknown field "foo"' in result.stderr
