"""The schema facts other modules rely on, read from kubernetes-validate's v1.32 definitions."""

import pytest

from pinnace.api import schemas


def test_definition_for_gvk_finds_built_in_kinds():
    assert schemas.definition_for_gvk("apps", "v1", "Deployment") == "io.k8s.api.apps.v1.Deployment"
    assert schemas.definition_for_gvk("", "v1", "Pod") == "io.k8s.api.core.v1.Pod"
    assert schemas.definition_for_gvk("example.com", "v1", "Widget") is None


def test_self_contained_schema_embeds_only_reachable_definitions():
    schema = schemas.schema_for_gvk("", "v1", "ConfigMap")
    assert "io.k8s.api.core.v1.ConfigMap" in schema["$defs"]
    assert "io.k8s.api.core.v1.PodSpec" not in schema["$defs"]
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref[len("#/$defs/") :] in schema["$defs"]


def _refs(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_strict_validator_reports_unknown_fields():
    validator = schemas.validator_for_gvk("", "v1", "Pod", strict=True)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}], "containerz": []},
    }
    errors = list(validator.iter_errors(pod))
    assert any("containerz" in e.message for e in errors)
    assert not list(schemas.validator_for_gvk("", "v1", "Pod").iter_errors(pod))


def test_crd_schema_property_named_ref_is_not_a_reference():
    props = schemas.definition("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps")
    assert isinstance(props["properties"]["$ref"], dict)
    assert schemas.validator_for_gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition") is not None


@pytest.mark.parametrize(
    "gvk, path, strategy, merge_key, list_type, keys",
    [
        (("", "v1", "Pod"), ("spec", "containers"), "merge", "name", "map", ["name"]),
        (
            ("", "v1", "Pod"),
            ("spec", "containers", "[]", "ports"),
            "merge",
            "containerPort",
            "map",
            ["containerPort", "protocol"],
        ),
        (("", "v1", "Pod"), ("spec", "tolerations"), None, None, "atomic", []),
        (("", "v1", "Pod"), ("spec", "volumes"), "merge,retainKeys", "name", "map", ["name"]),
        (("", "v1", "Service"), ("spec", "ports"), "merge", "port", "map", ["port", "protocol"]),
        (("apps", "v1", "Deployment"), ("spec", "strategy"), "retainKeys", None, None, []),
        (("apps", "v1", "Deployment"), ("metadata", "finalizers"), "merge", None, "set", []),
    ],
)
def test_walker_reports_patch_metadata(gvk, path, strategy, merge_key, list_type, keys):
    node = schemas.walk(*gvk, path)
    assert node.patch_strategy == strategy
    assert node.merge_key == merge_key
    assert node.list_type == list_type
    assert node.list_map_keys == keys


def test_walker_knows_maps_and_atomic_structs():
    pod = schemas.walker_for_gvk("", "v1", "Pod")
    assert pod.path("metadata", "labels").is_map
    assert pod.path("spec", "containers", "[]", "resources", "limits").is_map
    assert schemas.walk("apps", "v1", "Deployment", ["spec", "selector"]).map_type == "atomic"
    assert not pod.path("nosuch", "field").known
