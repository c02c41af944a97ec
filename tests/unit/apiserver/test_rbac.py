"""RBAC rule matching, the subject index, aggregation and escalation checks, without a server."""

from __future__ import annotations

import pytest

from pinnace.apiserver.auth import User
from pinnace.apiserver.authz.attributes import Attributes, forbidden, from_request
from pinnace.apiserver.authz.rbac import RBACAuthorizer, Rule, url_matches
from pinnace.apiserver.bootstrap_rbac import cluster_role_bindings, cluster_roles


def res(verb: str, resource: str, namespace: str = "", name: str = "", group: str = "", sub: str = "") -> Attributes:
    return Attributes(verb, True, group, "v1", resource, sub, namespace, name)


def rule(verbs, groups=("",), resources=("pods",), names=()) -> dict:
    out = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    if names:
        out["resourceNames"] = list(names)
    return out


@pytest.mark.parametrize("rule_dict, attrs, allowed", [
    (rule(["get"]), res("get", "pods"), True),
    (rule(["get"]), res("list", "pods"), False),
    (rule(["*"]), res("deletecollection", "pods"), True),
    (rule(["get"], groups=["apps"]), res("get", "pods"), False),
    (rule(["get"], groups=["*"], resources=["*"]), res("get", "deployments", group="apps"), True),
    (rule(["get"]), res("get", "pods", sub="log"), False),  # subresources are named explicitly
    (rule(["get"], resources=["pods/log"]), res("get", "pods", sub="log"), True),
    (rule(["get"], resources=["*/scale"]), res("get", "deployments", sub="scale"), True),
    (rule(["get"], resources=["pods/*"]), res("get", "pods", sub="exec"), True),
    (rule(["get"], names=["a"]), res("get", "pods", name="a"), True),
    (rule(["get"], names=["a"]), res("get", "pods", name="b"), False),
    (rule(["list"], names=["a"]), res("list", "pods"), False),  # a named rule never covers a list
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}, Attributes("get", False, path="/healthz/etcd"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, Attributes("get", False, path="/metrics"), False),
])
def test_rule_matching(rule_dict, attrs, allowed) -> None:
    parsed = Rule.of(rule_dict)
    assert parsed is not None and parsed.allows(attrs) is allowed


def test_url_patterns() -> None:
    assert url_matches("*", "/anything") and url_matches("/apis/*", "/apis/apps") and not url_matches("/api", "/apis")


@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "/api/v1/namespaces/ns/pods", {}, res("list", "pods", "ns")),
    ("GET", "/api/v1/pods", {"watch": "true"}, res("watch", "pods")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, res("get", "pods", "ns", "p", sub="log")),
    ("DELETE", "/apis/apps/v1/namespaces/ns/deployments", {}, res("deletecollection", "deployments", "ns", group="apps")),
    ("PATCH", "/api/v1/nodes/n1/status", {}, res("patch", "nodes", name="n1", sub="status")),
    ("GET", "/api/v1/namespaces/team", {}, res("get", "namespaces", "team", "team")),
    ("POST", "/api/v1/namespaces", {}, res("create", "namespaces")),
])
def test_request_attributes(method, path, query, expected) -> None:
    got = from_request(method, path, query)
    assert (got.verb, got.group, got.resource, got.subresource, got.namespace, got.name) == (
        expected.verb, expected.group, expected.resource, expected.subresource, expected.namespace, expected.name)


def test_forbidden_messages_match_kubernetes() -> None:
    alice = User("alice", ())
    assert forbidden(alice, res("list", "pods", "default")).message == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default"')
    assert forbidden(alice, res("get", "deployments", name="web", group="apps")).message == (
        'deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" '
        "at the cluster scope")
    assert forbidden(alice, Attributes("get", False, path="/metrics")).message == 'forbidden: User "alice" cannot get path "/metrics"'


def authorizer_with_defaults() -> RBACAuthorizer:
    authz = RBACAuthorizer()
    authz.reset({"clusterroles": cluster_roles(), "clusterrolebindings": cluster_role_bindings()})
    return authz


def binding(kind: str, ns: str, name: str, role_kind: str, role: str, subjects: list[dict]) -> dict:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": role_kind, "name": role}, "subjects": subjects}


def test_bindings_by_subject_namespace_and_revocation() -> None:
    authz = authorizer_with_defaults()
    authz.apply("roles", "dev", "reader", {"metadata": {"name": "reader", "namespace": "dev"}, "rules": [rule(["get"])]}, 5)
    authz.apply("rolebindings", "dev", "b", binding("RoleBinding", "dev", "b", "Role", "reader",
                                                    [{"kind": "Group", "name": "devs"}]), 6)
    ann = User("ann", ("devs", "system:authenticated"))
    assert authz.authorize(ann, res("get", "pods", "dev")).allowed
    assert not authz.authorize(ann, res("get", "pods", "prod")).allowed
    assert authz.authorize(ann, res("create", "selfsubjectaccessreviews", group="authorization.k8s.io")).allowed
    # An older write arriving late does not undo a newer one.
    authz.apply("rolebindings", "dev", "b", None, 8)
    authz.apply("rolebindings", "dev", "b", binding("RoleBinding", "dev", "b", "Role", "reader", [{"kind": "Group", "name": "devs"}]), 7)
    assert not authz.authorize(ann, res("get", "pods", "dev")).allowed


def test_service_account_subjects_and_masters() -> None:
    authz = authorizer_with_defaults()
    authz.apply("clusterrolebindings", "", "sa", binding("ClusterRoleBinding", "", "sa", "ClusterRole", "view",
                                                         [{"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]), 3)
    bot = User("system:serviceaccount:ci:bot", ("system:serviceaccounts", "system:authenticated"))
    assert authz.authorize(bot, res("list", "deployments", "x", group="apps")).allowed  # view aggregates apps reads
    assert not authz.authorize(bot, res("get", "secrets", "x")).allowed
    root = User("root", ("system:masters",))
    assert authz.authorize(root, res("delete", "nodes", name="n")).allowed


def test_aggregation_is_transitive_and_label_driven() -> None:
    authz = authorizer_with_defaults()
    extra = {"metadata": {"name": "x", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
             "rules": [rule(["get"], groups=["example.com"], resources=["widgets"])]}
    authz.apply("clusterroles", "", "x", extra, 2)
    for role in ("view", "edit", "admin"):
        rules = authz.cluster_role_rules(role)
        assert Rule.of(extra["rules"][0]) in rules, role
    assert not any(r.resources == ("secrets",) and "get" in r.verbs for r in authz.cluster_role_rules("view"))


def test_covers_for_escalation_checks() -> None:
    authz = authorizer_with_defaults()
    authz.apply("rolebindings", "p", "b", binding("RoleBinding", "p", "b", "ClusterRole", "edit", [{"kind": "User", "name": "u"}]), 2)
    user = User("u", ("system:authenticated",))
    assert authz.covers(user, "p", [Rule.of(rule(["get", "list"]))]) == []
    assert authz.covers(user, "p", [Rule.of(rule(["*"], groups=["*"], resources=["*"]))])
    assert authz.covers(user, "q", [Rule.of(rule(["get"]))])  # held in p, not in q
