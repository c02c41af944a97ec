"""Status bodies byte for byte, and discovery content negotiation."""

import orjson

from pinnace.api.kinds import registry
from pinnace.apiserver.discovery import Discovery, aggregated_version
from pinnace.apiserver.errors import Invalid, NotFound, TooManyRequests, cause
from pinnace.apiserver.handlers import negotiate


def test_not_found_body_matches_kube_apiserver():
    assert NotFound.object("deployments", "apps", "web").body() == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"deployments.apps \\"web\\" not found","reason":"NotFound",'
        b'"details":{"name":"web","group":"apps","kind":"deployments"},"code":404}\n'
    )


def test_invalid_lists_causes_in_go_order():
    error = Invalid.fields("Pod", "", "p", [cause("spec.containers", "Required value", "FieldValueRequired")])
    body = orjson.loads(error.body())
    assert body["message"] == 'Pod "p" is invalid: spec.containers: Required value'
    assert list(body["details"]["causes"][0]) == ["reason", "message", "field"]
    assert TooManyRequests("slow down", retry_after=1).status()["details"] == {"retryAfterSeconds": 1}


def test_aggregated_discovery_version_follows_the_accept_header():
    v2_first = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    assert aggregated_version(v2_first) == "v2"
    assert aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList") == "v2beta1"
    assert aggregated_version("application/json, */*") is None


def test_legacy_core_list_names_eviction_in_policy():
    body = orjson.loads(Discovery(registry()).resource_list("", "v1"))
    eviction = next(r for r in body["resources"] if r["name"] == "pods/eviction")
    assert (eviction["group"], eviction["version"], eviction["kind"]) == ("policy", "v1", "Eviction")
    pods = next(r for r in body["resources"] if r["name"] == "pods")
    assert pods["shortNames"] == ["po"] and pods["categories"] == ["all"] and pods["singularName"] == "pod"


def test_accept_negotiation():
    assert negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").format == "table"
    assert negotiate("application/vnd.kubernetes.protobuf,application/json").format == "json"
    assert negotiate("application/vnd.kubernetes.protobuf, */*").format == "json"
    assert negotiate("application/yaml").format == "yaml"
    assert negotiate(None).format == "json"
