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


def _legacy_entries(discovery: Discovery, group: str, version: str) -> dict[str, tuple]:
    body = orjson.loads(discovery.resource_list(group, version))
    return {
        r["name"]: (r["kind"], r["namespaced"], tuple(r["verbs"]), r["singularName"])
        for r in body["resources"] if "/" not in r["name"]
    }


def test_aggregated_discovery_lists_every_group_and_resource_of_legacy_discovery():
    discovery = Discovery(registry())
    legacy_groups = [g["name"] for g in orjson.loads(discovery.api_group_list())["groups"]]
    for version in ("v2", "v2beta1"):
        aggregated = orjson.loads(discovery.aggregated(False, version))
        assert aggregated["apiVersion"] == f"apidiscovery.k8s.io/{version}"
        assert [item["metadata"]["name"] for item in aggregated["items"]] == legacy_groups
        for item in aggregated["items"]:
            group = item["metadata"]["name"]
            legacy_versions = [v["version"] for v in orjson.loads(discovery.api_group(group))["versions"]]
            assert [v["version"] for v in item["versions"]] == legacy_versions
            for entry in item["versions"]:
                expected = _legacy_entries(discovery, group, entry["version"])
                got = {
                    r["resource"]: (r["responseKind"]["kind"], r["scope"] == "Namespaced", tuple(r["verbs"]),
                                    r["singularResource"])
                    for r in entry["resources"]
                }
                assert got == expected, (group, entry["version"])
    core = orjson.loads(discovery.aggregated(True, "v2"))["items"][0]["versions"][0]["resources"]
    assert {r["resource"] for r in core} == set(_legacy_entries(discovery, "", "v1"))


def test_review_groups_are_in_discovery_create_only_as_the_review_api_serves_them():
    from pinnace.apiserver.authz import reviews

    discovery = Discovery(registry())
    groups = [g["name"] for g in orjson.loads(discovery.api_group_list())["groups"]]
    # kube-apiserver's order: right after events.k8s.io, authentication before authorization
    at = groups.index("events.k8s.io")
    assert groups[at + 1:at + 3] == ["authentication.k8s.io", "authorization.k8s.io"]
    expected = {
        "authentication.k8s.io": {"tokenreviews": ("TokenReview", "Cluster"),
                                  "selfsubjectreviews": ("SelfSubjectReview", "Cluster")},
        "authorization.k8s.io": {"subjectaccessreviews": ("SubjectAccessReview", "Cluster"),
                                 "selfsubjectaccessreviews": ("SelfSubjectAccessReview", "Cluster"),
                                 "selfsubjectrulesreviews": ("SelfSubjectRulesReview", "Cluster"),
                                 "localsubjectaccessreviews": ("LocalSubjectAccessReview", "Namespaced")},
    }
    for version in ("v2", "v2beta1"):
        items = {i["metadata"]["name"]: i for i in orjson.loads(discovery.aggregated(False, version))["items"]}
        for group, resources in expected.items():
            [v1] = items[group]["versions"]
            assert v1["version"] == "v1"
            got = {r["resource"]: (r["responseKind"]["kind"], r["scope"]) for r in v1["resources"]}
            assert got == resources
            assert all(r["verbs"] == ["create"] for r in v1["resources"])
            assert all("subresources" not in r for r in v1["resources"])
    for group in expected:
        # the legacy documents the review API serves itself are the ones discovery builds
        served = reviews.discovery(f"/apis/{group}/v1")
        assert served is not None and orjson.loads(served.body) == orjson.loads(discovery.resource_list(group, "v1"))
        served = reviews.discovery(f"/apis/{group}")
        assert served is not None and orjson.loads(served.body) == orjson.loads(discovery.api_group(group))
