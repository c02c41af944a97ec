"""Custom resources: the Scale at a CRD's paths, printer column cells, the Terminating condition."""

from __future__ import annotations

import datetime

import pytest

from pinnace.api import crd as crds
from pinnace.apiserver import crdcleanup, customscale
from pinnace.apiserver.errors import Invalid

CRD = {
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {
        "group": "stable.example.com",
        "names": {"plural": "crontabs", "kind": "CronTab"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "scale": {
                        "specReplicasPath": ".spec.size.wanted",
                        "statusReplicasPath": ".status.size",
                        "labelSelectorPath": ".status.selector",
                    }
                },
            },
            {"name": "v2", "served": True, "storage": False, "subresources": {"scale": {}}},
        ],
    },
}


def crontab(spec: dict | None = None, status: dict | None = None) -> dict:
    obj = {
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "c", "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
        "spec": spec or {},
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(
    "version, obj, spec, status",
    [
        (
            "v1",
            crontab({"size": {"wanted": 3}}, {"size": 2, "selector": "app=cron"}),
            3,
            {"replicas": 2, "selector": "app=cron"},
        ),
        ("v1", crontab({"size": {"wanted": 3}}), 3, {"replicas": 0}),  # no status yet
        ("v1", crontab({}), 0, {"replicas": 0}),
        (
            "v2",
            crontab({"replicas": 4}, {"replicas": 1}),
            4,
            {"replicas": 1},
        ),  # the paths default to .spec/.status.replicas
    ],
)
def test_the_scale_reads_the_paths_its_crd_names(version, obj, spec, status):
    scale = customscale.scale_of(obj, customscale.scale_paths(CRD, version))
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["metadata"] == {"name": "c", "namespace": "default", "uid": "u-1", "resourceVersion": "7"}
    assert scale["spec"] == {"replicas": spec}
    assert scale["status"] == status


def test_setting_replicas_creates_the_objects_on_the_path():
    obj = crontab({})
    customscale.set_path(obj, ".spec.size.wanted", 5)
    assert obj["spec"] == {"size": {"wanted": 5}}
    customscale.set_path(obj, ".spec.size.wanted", 6)
    assert obj["spec"] == {"size": {"wanted": 6}}


@pytest.mark.parametrize(
    "body", [{"spec": {"replicas": -1}}, {"spec": {"replicas": "3"}}, {"spec": {"replicas": True}}, {}]
)
def test_a_scale_without_a_valid_replica_count_is_invalid(body):
    with pytest.raises(Invalid) as error:
        customscale.replicas_of(body, "c")
    assert error.value.code == 422


NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    "column_type, value, cell",
    [
        ("date", "2026-01-01T11:55:00Z", "5m"),  # dates are ages, rendered by the server
        ("date", "2025-12-30T12:00:00Z", "2d"),
        ("date", "yesterday", "<invalid>"),
        ("integer", 3, 3),
        ("integer", 2.0, 2),
        ("integer", "3", None),  # a value of another type is empty, printed <none> by kubectl
        ("number", 1, 1.0),
        ("boolean", True, True),
        ("boolean", "true", None),
        ("string", "x", "x"),
        ("string", 7, "7"),
        ("string", {"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
        ("string", None, None),
    ],
)
def test_printer_column_cells_follow_the_column_type(column_type, value, cell):
    obj = {"metadata": {"name": "c"}, "spec": {"field": value}}
    columns = [
        {"type": "string", "jsonPath": ".metadata.name"},
        {"type": column_type, "jsonPath": ".spec.field"},
    ]
    assert crds.row_cells(obj, columns, now=NOW) == ["c", cell]


def test_a_terminating_crd_gets_the_condition_once():
    crd = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert not crdcleanup._terminating(crd)
    crdcleanup._set_terminating(crd)
    crdcleanup._set_terminating(crd)
    types = [c["type"] for c in crd["status"]["conditions"]]
    assert types == ["Established", "Terminating"]
    assert crdcleanup._terminating(crd)
    assert crd["status"]["conditions"][1]["reason"] == "InstanceDeletionInProgress"
