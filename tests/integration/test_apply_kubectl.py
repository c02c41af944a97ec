"""kubectl apply (client- and server-side), diff, patch, explain, dry-run and set image against pinnace."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from tests.conftest import kubectl_path

pytestmark = pytest.mark.timeout(180)


def deployment(
    image: str = "nginx:1.25", replicas: int = 2, extra_label: bool = True, env: bool = True
) -> str:
    container: dict = {"name": "app", "image": image}
    if env:
        container["env"] = [{"name": "MODE", "value": "fast"}]
    labels = {"app": "web", "tier": "front"} if extra_label else {"app": "web"}
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
            },
        }
    )


def ok(result):
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def get_json(kubectl, *args):
    return json.loads(ok(kubectl("get", *args, "-o", "json", "--show-managed-fields")))


def test_client_side_apply_create_update_and_remove_a_field(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    assert "deployment.apps/web created" in ok(kubectl("apply", "-f", str(manifest)))
    obj = get_json(kubectl, "deployment", "web")
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert "deployment.apps/web unchanged" in ok(kubectl("apply", "-f", str(manifest)))

    manifest.write_text(deployment(image="nginx:1.27", extra_label=False, env=False))
    assert "deployment.apps/web configured" in ok(kubectl("apply", "-f", str(manifest)))
    obj = get_json(kubectl, "deployment", "web")
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27"
    assert "env" not in container
    assert obj["metadata"]["labels"] == {"app": "web"}


def test_server_side_apply_conflicts_and_force(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    assert "serverside-applied" in ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    obj = get_json(kubectl, "deployment", "web")
    managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers

    ok(kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":5}}'))
    result = kubectl("apply", "--server-side", "-f", str(manifest))
    assert result.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl-patch" using apps/v1' in result.stderr
    assert ".spec.replicas" in result.stderr

    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest)))
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 2

    manifest.write_text(deployment(extra_label=False))
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    assert get_json(kubectl, "deployment", "web")["metadata"]["labels"] == {"app": "web"}


def test_kubectl_scale_then_server_side_apply_conflicts_on_replicas(kubectl, tmp_path):
    # kubectl scale names no field manager: the server records the User-Agent's first part, as Kubernetes
    # does: the kubectl binary's file name ("kubectl", or "kubectl.1.32" for an installed side by side).
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    ok(kubectl("scale", "deployment", "web", "--replicas=4"))
    obj = get_json(kubectl, "deployment", "web")
    scalers = [m for m in obj["metadata"]["managedFields"] if m.get("subresource") == "scale"]
    agent = os.path.basename(kubectl_path())
    assert [(m["manager"], m["operation"]) for m in scalers] == [(agent, "Update")]
    assert "f:replicas" in scalers[0]["fieldsV1"]["f:spec"]
    result = kubectl("apply", "--server-side", "-f", str(manifest))
    assert result.returncode != 0
    assert f'conflict with "{agent}" with subresource "scale"' in result.stderr and ".spec.replicas" in result.stderr
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 4


def test_writes_without_field_manager_are_recorded_under_the_user_agent(kubectl, tmp_path):
    ok(kubectl("create", "configmap", "settings", "--from-literal=a=1"))
    managers = {(m["manager"], m["operation"]) for m in get_json(kubectl, "configmap", "settings")["metadata"]["managedFields"]}
    assert managers == {("kubectl-create", "Update")}  # kubectl names this one itself
    ok(kubectl("label", "configmap", "settings", "tier=web"))
    managers = {m["manager"] for m in get_json(kubectl, "configmap", "settings")["metadata"]["managedFields"]}
    assert "kubectl-label" in managers


def test_server_side_apply_hand_over_between_managers(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "--server-side", "--field-manager=team-a", "-f", str(manifest)))
    manifest.write_text(deployment(replicas=3))
    result = kubectl("apply", "--server-side", "--field-manager=team-b", "-f", str(manifest))
    assert result.returncode != 0 and 'conflict with "team-a"' in result.stderr
    ok(kubectl("apply", "--server-side", "--field-manager=team-b", "--force-conflicts", "-f", str(manifest)))
    obj = get_json(kubectl, "deployment", "web")
    owners = {m["manager"]: m["fieldsV1"] for m in obj["metadata"]["managedFields"]}
    assert "f:replicas" in owners["team-b"]["f:spec"]
    assert "f:replicas" not in owners["team-a"].get("f:spec", {})


def test_diff_shows_changes(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    assert kubectl("diff", "-f", str(manifest)).returncode == 0
    manifest.write_text(deployment(image="nginx:1.27"))
    result = kubectl("diff", "-f", str(manifest))
    assert result.returncode == 1, result.stderr
    assert "+        image: nginx:1.27" in result.stdout
    assert (
        get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "nginx:1.25"
    )


def test_patch_with_all_three_types(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    ok(
        kubectl(
            "patch",
            "deployment",
            "web",
            "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}',
        )
    )
    names = [
        c["name"] for c in get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"]
    ]
    assert names == ["app", "side"]
    ok(kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"labels":{"tier":null}}}'))
    assert get_json(kubectl, "deployment", "web")["metadata"]["labels"] == {"app": "web"}
    ok(
        kubectl(
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            '[{"op":"replace","path":"/spec/replicas","value":4}]',
        )
    )
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 4
    failed = kubectl(
        "patch", "deployment", "web", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":9}]'
    )
    assert failed.returncode != 0


@pytest.mark.parametrize("version", ["1.32", "1.27", "1.33"])
def test_explain_pod_spec_containers(kubectl, version):
    out = ok(kubectl("explain", "pod.spec.containers", version=version))
    assert "FIELD: containers <[]Container>" in out
    assert "image" in out and "imagePullPolicy" in out


def test_dry_run_server_stores_nothing(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    assert "(server dry run)" in ok(kubectl("apply", "--dry-run=server", "-f", str(manifest)))
    assert kubectl("get", "deployment", "web").returncode != 0
    assert "(server dry run)" in ok(kubectl("create", "--dry-run=server", "-f", str(manifest)))
    assert kubectl("get", "deployment", "web").returncode != 0


def test_set_image(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    assert "image updated" in ok(kubectl("set", "image", "deployment/web", "app=nginx:1.28"))
    assert (
        get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "nginx:1.28"
    )


def test_server_validation_rejects_unknown_fields(kubectl, tmp_path):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(deployment().replace("  replicas:", "  replicaz:"))
    result = kubectl("apply", "-f", str(manifest))
    assert result.returncode != 0
    assert 'unknown field "spec.replicaz"' in result.stderr


def test_apply_directory_kustomize_and_prune(kubectl, tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": {"set": "demo"}},
                    "data": {"k": name},
                }
            )
        )
    out = ok(kubectl("apply", "-f", str(folder)))
    assert "configmap/one created" in out and "configmap/two created" in out

    (folder / "two.yaml").unlink()
    out = ok(kubectl("apply", "-f", str(folder), "--prune", "-l", "set=demo"))
    assert "configmap/two pruned" in out
    assert kubectl("get", "configmap", "two").returncode != 0

    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["one.yaml"], "namePrefix": "k-", "commonLabels": {"via": "kustomize"}})
    )
    assert "configmap/k-one created" in ok(kubectl("apply", "-k", str(folder)))
    assert get_json(kubectl, "configmap", "k-one")["metadata"]["labels"]["via"] == "kustomize"


def test_edit_with_editor_script(kubectl, kubeconfig, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 2/replicas: 6/' \"$1\"\n")
    editor.chmod(0o755)
    # The shared fixture does not take an environment; run kubectl the same way with EDITOR set.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(kubeconfig),
        "EDITOR": str(editor),
    }
    result = subprocess.run(
        [kubectl_path(), f"--kubeconfig={kubeconfig}", "edit", "deployment", "web"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 6


def test_rollout_restart_patches_the_template(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    assert "restarted" in ok(kubectl("rollout", "restart", "deployment/web"))
    annotations = get_json(kubectl, "deployment", "web")["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations


def test_server_side_apply_service_ports_by_port_and_protocol(kubectl, tmp_path):
    def service(ports):
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "svc"},
                "spec": {"selector": {"app": "web"}, "ports": ports},
            }
        )

    manifest = tmp_path / "svc.yaml"
    manifest.write_text(
        service(
            [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443},
            ]
        )
    )
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    manifest.write_text(service([{"name": "http", "port": 80, "targetPort": 9090}]))
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    ports = get_json(kubectl, "service", "svc")["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in ports] == [(80, 9090)]
    assert ports[0]["protocol"] == "TCP"


@pytest.mark.parametrize("version", ["1.27", "1.28", "1.29", "1.33"])
def test_other_kubectl_versions_apply(kubectl, tmp_path, version):
    # 1.27 and 1.28 read the protobuf OpenAPI v2 document, later versions the v3 documents.
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    assert "created" in ok(kubectl("apply", "-f", str(manifest), version=version))
    manifest.write_text(deployment(image="nginx:1.27", env=False))
    assert "configured" in ok(kubectl("apply", "-f", str(manifest), version=version))
    container = get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27" and "env" not in container
    bad = tmp_path / "bad.yaml"
    bad.write_text(deployment().replace("  replicas:", "  replicaz:"))
    assert kubectl("apply", "-f", str(bad), version=version).returncode != 0


def test_server_side_apply_after_client_side_apply_takes_over_without_conflict(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "-f", str(manifest)))
    manifest.write_text(deployment(replicas=3))
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    obj = get_json(kubectl, "deployment", "web")
    assert obj["spec"]["replicas"] == 3
    managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers


def test_server_side_diff_and_dry_run(kubectl, tmp_path):
    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment())
    ok(kubectl("apply", "--server-side", "-f", str(manifest)))
    manifest.write_text(deployment(replicas=4))
    result = kubectl("diff", "--server-side", "-f", str(manifest))
    assert result.returncode == 1, result.stderr
    assert "+  replicas: 4" in result.stdout
    assert "(server dry run)" in ok(
        kubectl("apply", "--server-side", "--dry-run=server", "-f", str(manifest))
    )
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 2


def test_client_side_apply_merges_service_ports_by_port(kubectl, tmp_path):
    def service(ports):
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "svc"},
                "spec": {"selector": {"app": "web"}, "ports": ports},
            }
        )

    manifest = tmp_path / "svc.yaml"
    manifest.write_text(service([{"name": "http", "port": 80}, {"name": "https", "port": 443}]))
    ok(kubectl("apply", "-f", str(manifest)))
    manifest.write_text(service([{"name": "https", "port": 443, "targetPort": 8443}]))
    ok(kubectl("apply", "-f", str(manifest)))
    ports = get_json(kubectl, "service", "svc")["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in ports] == [(443, 8443)]
