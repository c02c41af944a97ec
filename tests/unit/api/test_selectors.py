"""Label and field selectors: parsed like Kubernetes, matched on the parsed form."""

import pytest

from pinnace.api.selectors import (
    SelectorError,
    allowed_fields,
    field_getter,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "example.com/owner": "team-a"}


@pytest.mark.parametrize(
    "selector, matches",
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=db", False),
        ("missing!=x", True),  # != also matches objects without the label
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db, cache)", True),
        ("missing notin (x)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=web,tier=front", True),
        ("app=web, tier=back", False),
        ("example.com/owner=team-a", True),
        ("app=", False),
    ],
)
def test_label_selector(selector, matches):
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize("selector", ["app in (web", "app=web,,", "=web", "a b"])
def test_malformed_label_selectors_are_errors(selector):
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_label_selector_from_a_label_selector_object():
    selector = label_selector_from_dict(
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}
    )
    assert selector.matches(LABELS)
    assert not selector.matches({"app": "web"})
    assert label_selector_from_dict(None).matches({})
    with pytest.raises(SelectorError):
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Near"}]})


POD = {
    "metadata": {"name": "p", "namespace": "default"},
    "spec": {"nodeName": "node-1", "schedulerName": "default-scheduler"},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    "selector, matches",
    [
        ("metadata.name=p", True),
        ("metadata.name==p,metadata.namespace=default", True),
        ("metadata.namespace=default,metadata.name=p", True),  # term order never matters
        ("spec.nodeName=node-1,status.phase!=Succeeded,status.phase!=Failed", True),
        ("status.phase!=Running", False),
        ("spec.nodeName=", False),
    ],
)
def test_pod_field_selectors(selector, matches):
    fields = field_getter("v1/pods")(POD)
    assert parse_field_selector(selector, allowed_fields("v1/pods")).matches(fields) is matches


def test_unsupported_field_is_an_error_naming_it():
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.bogus"):
        parse_field_selector("spec.bogus=1", allowed_fields("v1/pods"))


def test_event_and_node_fields():
    event = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1"}, "reason": "Started", "type": "Normal"}
    fields = field_getter("v1/events")(event)
    selector = parse_field_selector("involvedObject.uid=u1,involvedObject.name=p,involvedObject.kind=Pod,type=Normal",
                                    allowed_fields("v1/events"))
    assert selector.matches(fields)
    node_fields = field_getter("v1/nodes")({"metadata": {"name": "n"}, "spec": {"unschedulable": True}})
    assert parse_field_selector("spec.unschedulable=true").matches(node_fields)


def test_escaped_values_and_equality_lookup():
    selector = parse_field_selector(r"metadata.name=a\,b")
    assert selector.value_of("metadata.name") == "a,b"
    assert parse_field_selector("metadata.name!=x").value_of("metadata.name") is None
