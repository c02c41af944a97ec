"""CustomResourceDefinition helpers: status, resources, pruning, defaults, validation, printer columns."""

from pinnace.api import crd as crds
from pinnace.api.apply import server_side_apply

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Phase",
                        "type": "string",
                        "jsonPath": ".status.conditions[0].type",
                        "priority": 1,
                    },
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string", "default": "blue"},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                    "ports": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "name": {"type": "string"},
                                                "number": {"type": "integer"},
                                            },
                                        },
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {"type": {"type": "string"}},
                                        },
                                    }
                                },
                            },
                        },
                    }
                },
            },
            {"name": "v1beta1", "served": False, "storage": False},
        ],
    },
}
SCHEMA = crds.version_schema(CRD, "v1")


def widget(**spec):
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def test_accepted_status_and_resources():
    assert crds.names_problems(CRD) == []
    status = crds.accepted_status(CRD, now="2024-01-01T00:00:00Z")
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    assert status["acceptedNames"]["listKind"] == "WidgetList" and status["storedVersions"] == ["v1"]
    (info,) = crds.resource_infos(CRD)
    assert (info.name, info.namespaced, info.short_names) == ("example.com/v1/widgets", True, ("wd",))
    assert set(info.subresources) == {"status", "scale"}
    assert crds.openapi_registrations(CRD)[0]["subresources"] == ("status", "scale")


def test_names_must_match_plural_and_group():
    bad = {**CRD, "metadata": {"name": "widgets.other.com"}}
    assert any("metadata.name" in p for p in crds.names_problems(bad))


def test_prune_drops_undeclared_fields_but_keeps_preserved_ones():
    obj = widget(size=1, bogus=True, free={"anything": {"goes": 1}}, ports=[{"name": "a", "extra": 1}])
    obj["unknownTop"] = 1
    dropped = crds.prune(obj, SCHEMA)
    assert sorted(dropped) == ["spec.bogus", "spec.ports[0].extra", "unknownTop"]
    assert obj["spec"]["free"] == {"anything": {"goes": 1}} and obj["metadata"] == {"name": "w"}


def test_defaults_fill_absent_properties():
    obj = widget(size=2)
    crds.apply_defaults(obj, SCHEMA)
    assert obj["spec"]["color"] == "blue"


def test_validation_causes():
    assert crds.validate(widget(size=2, port="http", note=None), SCHEMA) == []
    assert crds.validate(widget(size=2, port=8080), SCHEMA) == []
    causes = crds.validate(widget(size=0, port=True), SCHEMA)
    assert {c["field"] for c in causes} == {"spec.size", "spec.port"}
    assert crds.validate(widget(), SCHEMA) == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}
    ]


def test_printer_columns_and_cells():
    columns = crds.printer_columns(CRD, "v1")
    assert [c["name"] for c in columns] == ["Name", "Size", "Phase"]
    obj = widget(size=3)
    obj["status"] = {"conditions": [{"type": "Ready"}]}
    assert crds.row_cells(obj, columns) == ["w", 3, "Ready"]
    assert [c["name"] for c in crds.printer_columns(CRD, "v1beta1")] == ["Name", "Age"]


def test_server_side_apply_uses_the_crd_list_map_keys():
    node = crds.schema_node(CRD, "v1")
    kw = {"group": "example.com", "version": "v1", "kind": "Widget", "schema": node}
    live = server_side_apply(
        None, widget(size=1, ports=[{"name": "a", "number": 1}]), manager="one", force=False, **kw
    )
    live = server_side_apply(
        live, widget(ports=[{"name": "b", "number": 2}]), manager="two", force=False, **kw
    )
    assert live["spec"]["ports"] == [{"name": "a", "number": 1}, {"name": "b", "number": 2}]
