"""Server-side apply: field ownership, conflicts, forced hand-over, removal of fields no longer applied."""

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinnace.api.apply import (
    from_fields_v1,
    managed_fields,
    path_string,
    server_side_apply,
    to_fields_v1,
    update_managed_fields,
)
from pinnace.api.patch import BadRequest, Conflict, apply_patch

KW = {"group": "apps", "version": "v1", "kind": "Deployment"}


def deployment(replicas=2, image="nginx:1", containers=None, labels=None):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels or {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": containers
                    or [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]
                },
            },
        },
    }


def stored(obj):
    """What the server adds on create, so applies run against a realistic live object."""
    obj = copy.deepcopy(obj)
    obj["metadata"].update(uid="u-1", resourceVersion="5", creationTimestamp="2024-01-01T00:00:00Z")
    return obj


def apply(current, config, manager="kubectl", force=False):
    return server_side_apply(current, config, manager=manager, force=force, **KW)


def test_apply_creates_and_records_apply_ownership():
    created = apply(None, deployment())
    fields = managed_fields(created)[("kubectl", "Apply", None)]
    assert ("f:spec", "f:replicas") in fields
    assert ("f:spec", "f:selector") in fields  # LabelSelector is an atomic map
    assert ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:image") in fields
    assert ("f:metadata", "f:name") not in fields
    v1 = created["metadata"]["managedFields"][0]["fieldsV1"]
    container = v1["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"app"}']
    assert container["."] == {} and "f:image" in container
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in container["f:ports"]


def test_reapply_of_same_config_by_same_manager_changes_nothing_but_time():
    live = stored(apply(None, deployment()))
    again = apply(live, deployment())
    assert again["spec"] == live["spec"]
    assert again["metadata"]["uid"] == "u-1"


def test_conflict_with_another_managers_field_names_manager_and_field():
    live = stored(apply(None, deployment(replicas=2)))
    with pytest.raises(Conflict) as caught:
        apply(live, deployment(replicas=5), manager="other")
    error = caught.value
    assert error.code == 409
    assert error.causes == [
        {"type": "FieldManagerConflict", "message": 'conflict with "kubectl"', "field": ".spec.replicas"}
    ]
    assert error.message == 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas'


def test_same_value_is_shared_without_conflict():
    live = stored(apply(None, deployment(replicas=2)))
    shared = apply(live, deployment(replicas=2), manager="other")
    owners = managed_fields(shared)
    assert ("f:spec", "f:replicas") in owners[("kubectl", "Apply", None)]
    assert ("f:spec", "f:replicas") in owners[("other", "Apply", None)]


def test_force_moves_ownership_to_the_applier():
    live = stored(apply(None, deployment(replicas=2)))
    forced = apply(live, deployment(replicas=5), manager="other", force=True)
    assert forced["spec"]["replicas"] == 5
    owners = managed_fields(forced)
    assert ("f:spec", "f:replicas") not in owners[("kubectl", "Apply", None)]
    assert ("f:spec", "f:replicas") in owners[("other", "Apply", None)]


def test_field_dropped_by_its_only_manager_is_removed():
    two = [{"name": "app", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]
    live = stored(apply(None, deployment(containers=two, labels={"app": "web", "tier": "front"})))
    after = apply(live, deployment(containers=two[:1], labels={"app": "web"}))
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["app"]
    assert after["metadata"]["labels"] == {"app": "web"}


def test_field_dropped_but_owned_by_another_manager_stays():
    live = stored(apply(None, deployment(labels={"app": "web", "tier": "front"})))
    live = stored(
        apply(
            live,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"tier": "front"}},
            },
            manager="labeler",
        )
    )
    after = apply(live, deployment(labels={"app": "web"}))
    assert after["metadata"]["labels"] == {"app": "web", "tier": "front"}


def test_update_takes_ownership_of_changed_fields_and_then_conflicts():
    live = stored(apply(None, deployment(replicas=2)))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 7
    scaled = update_managed_fields(live, scaled, "kubectl-scale", "Update", **KW, now="2024-01-02T00:00:00Z")
    owners = managed_fields(scaled)
    assert owners[("kubectl-scale", "Update", None)] == {("f:spec", "f:replicas")}
    assert ("f:spec", "f:replicas") not in owners[("kubectl", "Apply", None)]
    with pytest.raises(Conflict) as caught:
        apply(scaled, deployment(replicas=2))
    assert caught.value.causes[0]["message"] == (
        'conflict with "kubectl-scale" using apps/v1 at 2024-01-02T00:00:00Z'
    )


def test_hand_over_from_client_side_apply_to_server_side_apply():
    # kubectl create / client-side apply: an Update entry owning everything it wrote.
    created = update_managed_fields(None, stored(deployment()), "kubectl-client-side-apply", "Update", **KW)
    owners = managed_fields(created)[("kubectl-client-side-apply", "Update", None)]
    assert ("f:metadata", "f:labels") in owners and ("f:metadata", "f:labels", "f:app") in owners
    with pytest.raises(Conflict):
        apply(created, deployment(replicas=9))
    moved = apply(created, deployment(replicas=9), force=True)
    assert moved["spec"]["replicas"] == 9
    assert ("f:spec", "f:replicas") in managed_fields(moved)[("kubectl", "Apply", None)]


def test_update_removing_a_field_drops_it_from_every_manager():
    live = stored(apply(None, deployment(labels={"app": "web", "tier": "front"})))
    edited = copy.deepcopy(live)
    del edited["metadata"]["labels"]["tier"]
    edited = update_managed_fields(live, edited, "kubectl-edit", "Update", **KW)
    owners = managed_fields(edited)
    assert ("f:metadata", "f:labels", "f:tier") not in owners[("kubectl", "Apply", None)]
    assert ("kubectl-edit", "Update", None) not in owners  # it changed nothing it now owns


def test_status_subresource_tracks_only_status():
    live = stored(apply(None, deployment()))
    with_status = copy.deepcopy(live)
    with_status["status"] = {"replicas": 2}
    with_status = update_managed_fields(live, with_status, "controller", "Update", **KW, subresource="status")
    entry = next(e for e in with_status["metadata"]["managedFields"] if e["manager"] == "controller")
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:replicas": {}}}


def test_client_may_clear_managed_fields():
    live = stored(apply(None, deployment()))
    cleared = copy.deepcopy(live)
    cleared["metadata"]["managedFields"] = []
    assert "managedFields" not in update_managed_fields(live, cleared, "x", **KW)["metadata"]


def test_fields_v1_round_trip_and_path_strings():
    paths = {
        ("f:spec", "f:replicas"),
        ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}'),
        ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:name"),
        ("f:metadata", "f:finalizers", 'v:"a"'),
    }
    assert from_fields_v1(to_fields_v1(paths)) == paths
    assert path_string(("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:name")) == (
        '.spec.ports[port=80,protocol="TCP"].name'
    )


def test_apply_patch_entry_point_parses_json_and_yaml_and_checks_kind():
    yaml_body = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n"
    created = apply_patch(
        None,
        yaml_body,
        "application/apply-patch+yaml",
        **KW,
        is_custom=False,
        field_manager="m",
        force=False,
        subresource=None,
    )
    assert created["spec"]["replicas"] == 1
    with pytest.raises(BadRequest):
        apply_patch(
            None,
            orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
            "application/apply-patch+yaml",
            **KW,
            is_custom=False,
            field_manager="m",
            force=False,
            subresource=None,
        )


def test_kubectl_may_take_over_fields_listed_in_its_last_applied_configuration():
    config = deployment(replicas=2)
    last = copy.deepcopy(config)
    config["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": orjson.dumps(last).decode()
    }
    live = update_managed_fields(None, stored(config), "kubectl-client-side-apply", "Update", **KW)
    moved = apply(live, deployment(replicas=3))
    assert moved["spec"]["replicas"] == 3
    assert (
        orjson.loads(moved["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])[
            "spec"
        ]["replicas"]
        == 3
    )
    with pytest.raises(Conflict):
        apply(live, deployment(replicas=3), manager="someone-else")


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(0, 5),
    labels=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]), max_size=3),
    images=st.lists(st.sampled_from(["nginx", "busybox", "redis"]), min_size=1, max_size=3, unique=True),
)
def test_apply_is_idempotent_and_owns_exactly_the_applied_fields(replicas, labels, images):
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    config = deployment(replicas=replicas, containers=containers, labels={"app": "web", **labels})
    once = stored(apply(None, config))
    twice = apply(once, config)
    assert twice["spec"] == once["spec"] and twice["metadata"]["labels"] == once["metadata"]["labels"]
    owned = managed_fields(twice)[("kubectl", "Apply", None)]
    assert {p[-1] for p in owned if p[:2] == ("f:metadata", "f:labels")} == {
        f"f:{k}" for k in {"app", *labels}
    }
