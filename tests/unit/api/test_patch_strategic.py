"""Strategic merge patch on Kubernetes-shaped objects, with strategies read from the schemas."""

import copy

import pytest

from pinnace.api import schemas
from pinnace.api.patch import Invalid, strategic_merge_patch

POD = schemas.walker_for_gvk("", "v1", "Pod")
DEPLOYMENT = schemas.walker_for_gvk("apps", "v1", "Deployment")
SERVICE = schemas.walker_for_gvk("", "v1", "Service")


def pod(**spec):
    base = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "web"}, "finalizers": ["a", "b", "c"]},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1",
                    "args": ["--a", "--b"],
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "side", "image": "busybox"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c1"}}],
            "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}],
        },
    }
    base["spec"].update(spec)
    return base


def smp(obj, patch, walker=POD):
    before = copy.deepcopy(obj)
    result = strategic_merge_patch(obj, patch, walker)
    assert obj == before  # never modifies its input
    return result


def test_containers_merge_by_name():
    result = smp(pod(), {"spec": {"containers": [{"name": "side", "image": "busybox:2"}]}})
    assert [(c["name"], c["image"]) for c in result["spec"]["containers"]] == [
        ("app", "nginx:1"),
        ("side", "busybox:2"),
    ]
    assert result["spec"]["containers"][0]["env"] == pod()["spec"]["containers"][0]["env"]


def test_new_container_is_appended():
    result = smp(pod(), {"spec": {"containers": [{"name": "new", "image": "x"}]}})
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "side", "new"]


def test_ports_merge_by_container_port():
    patch = {
        "spec": {
            "containers": [
                {"name": "app", "ports": [{"containerPort": 443, "name": "tls"}, {"containerPort": 8080}]}
            ]
        }
    }
    ports = smp(pod(), patch)["spec"]["containers"][0]["ports"]
    assert ports == [
        {"containerPort": 80, "name": "http"},
        {"containerPort": 443, "name": "tls"},
        {"containerPort": 8080},
    ]


def test_env_merges_by_name_and_patch_delete_removes_one():
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [
                        {"name": "A", "$patch": "delete"},
                        {"name": "B", "value": "20"},
                        {"name": "C", "value": "3"},
                    ],
                }
            ]
        }
    }
    env = smp(pod(), patch)["spec"]["containers"][0]["env"]
    assert env == [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]


def test_volumes_merge_by_name_and_retain_keys_switches_the_source():
    patch = {
        "spec": {
            "volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}]
        }
    }
    volumes = smp(pod(), patch)["spec"]["volumes"]
    assert volumes == [
        {"name": "data", "hostPath": {"path": "/srv"}},
        {"name": "cfg", "configMap": {"name": "c1"}},
    ]


def test_service_ports_merge_by_port():
    svc = {
        "spec": {
            "ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}],
            "selector": {"app": "web"},
        }
    }
    result = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, SERVICE)
    assert result["spec"]["ports"] == [
        {"port": 80, "targetPort": 9090, "name": "http"},
        {"port": 443, "name": "https"},
    ]


def test_tolerations_and_args_are_replaced():
    patch = {
        "spec": {
            "tolerations": [{"key": "k3", "operator": "Exists"}],
            "containers": [{"name": "app", "args": ["--c"]}],
        }
    }
    result = smp(pod(), patch)
    assert result["spec"]["tolerations"] == [{"key": "k3", "operator": "Exists"}]
    assert result["spec"]["containers"][0]["args"] == ["--c"]


def test_null_deletes_a_field():
    result = smp(pod(), {"metadata": {"labels": {"app": None}}, "spec": {"tolerations": None}})
    assert result["metadata"]["labels"] == {}
    assert "tolerations" not in result["spec"]


def test_set_element_order_reorders_merged_list():
    # What kubectl apply sends when the manifest lists "side" before "app".
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "nginx:2"}],
        }
    }
    result = smp(pod(), patch)
    assert [(c["name"], c["image"]) for c in result["spec"]["containers"]] == [
        ("side", "busybox"),
        ("app", "nginx:2"),
    ]


def test_set_element_order_keeps_server_only_items_in_place():
    obj = pod()
    obj["spec"]["containers"].append({"name": "injected", "image": "proxy"})
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}, {"name": "new"}],
            "containers": [{"name": "new", "image": "n"}],
        }
    }
    names = [c["name"] for c in smp(obj, patch)["spec"]["containers"]]
    assert names == ["app", "side", "injected", "new"]


def test_delete_from_primitive_list_and_union_of_finalizers():
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}}
    assert smp(pod(), patch)["metadata"]["finalizers"] == ["a", "c", "d"]


def test_patch_replace_on_a_map_and_on_a_list():
    result = smp(pod(), {"metadata": {"labels": {"$patch": "replace", "tier": "db"}}})
    assert result["metadata"]["labels"] == {"tier": "db"}
    patch = {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}
    assert smp(pod(), patch)["spec"]["containers"] == [{"name": "only", "image": "x"}]


def test_patch_delete_on_a_map():
    result = smp(pod(), {"metadata": {"labels": {"$patch": "delete"}}})
    assert "labels" not in result["metadata"]


def test_retain_keys_on_deployment_strategy():
    dep = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert smp(dep, patch, DEPLOYMENT)["spec"]["strategy"] == {"type": "Recreate"}


def test_kubectl_client_side_apply_update_patch():
    # The exact body kubectl apply sends when only the image changed (shared research).
    dep = {
        "metadata": {
            "name": "demo",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {
            "revisionHistoryLimit": 10,
            "template": {
                "spec": {
                    "containers": [{"name": "app", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent"}]
                }
            },
        },
    }
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"new":1}'}},
        "spec": {
            "revisionHistoryLimit": 5,
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"image": "nginx:1.27", "name": "app"}],
                }
            },
        },
    }
    result = smp(dep, patch, DEPLOYMENT)
    assert result["spec"]["revisionHistoryLimit"] == 5
    assert result["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"}
    ]


def test_missing_merge_key_is_invalid():
    with pytest.raises(Invalid):
        smp(pod(), {"spec": {"containers": [{"image": "x"}]}})


def test_unknown_schema_merges_maps_and_replaces_lists():
    result = strategic_merge_patch({"a": {"b": 1}, "l": [1, 2]}, {"a": {"c": 2}, "l": [3]}, schemas.EMPTY)
    assert result == {"a": {"b": 1, "c": 2}, "l": [3]}
