"""The review APIs `kubectl auth can-i` and `kubectl auth whoami` call.

- authorization.k8s.io/v1 SelfSubjectAccessReview: may I do this? (any authenticated user)
- authorization.k8s.io/v1 SubjectAccessReview, LocalSubjectAccessReview: may this user do this?
- authorization.k8s.io/v1 SelfSubjectRulesReview: what may I do in this namespace? (`can-i --list`)
- authentication.k8s.io/v1 SelfSubjectReview: who am I? (`whoami`)
- authentication.k8s.io/v1 TokenReview: whose token is this?

Reviews are create-only and never stored; each answers with the posted object plus `status`.
The groups are served here, with their discovery documents, because they hold no stored kinds.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pinnace.api import protobuf
from pinnace.apiserver.auth import User
from pinnace.apiserver.authz.attributes import Attributes
from pinnace.apiserver.errors import BadRequest, MethodNotAllowed, NotFound

AUTHORIZATION = "authorization.k8s.io"
AUTHENTICATION = "authentication.k8s.io"

_RESOURCES = {
    AUTHORIZATION: [
        ("localsubjectaccessreviews", "LocalSubjectAccessReview", True),
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False),
        ("subjectaccessreviews", "SubjectAccessReview", False),
    ],
    AUTHENTICATION: [
        ("selfsubjectreviews", "SelfSubjectReview", False),
        ("tokenreviews", "TokenReview", False),
    ],
}


# kubectl sends these reviews, and the RBAC objects it creates imperatively, in protobuf. Their messages, with the field numbers of the public
# k8s.io/api authorization/v1 and authentication/v1 generated.proto files, join the decoder's table.
_PROTOBUF_MESSAGES = {
    "ResourceAttributes": {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                           4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
                           7: ("name", "string")},
    "NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "SubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                2: ("nonResourceAttributes", "NonResourceAttributes"), 3: ("user", "string"),
                                4: ("groups", "string[]"), 6: ("uid", "string")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "string")},
    "TokenReviewSpec": {1: ("token", "string"), 2: ("audiences", "string[]")},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectAccessReviewSpec")},
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SubjectAccessReviewSpec")},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectRulesReviewSpec")},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta")},
    "TokenReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenReviewSpec")},
    # rbac/v1, for `kubectl create role|clusterrole|rolebinding|clusterrolebinding`
    "PolicyRule": {1: ("verbs", "string[]"), 2: ("apiGroups", "string[]"), 3: ("resources", "string[]"),
                   4: ("resourceNames", "string[]"), 5: ("nonResourceURLs", "string[]")},
    "Subject": {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"), 4: ("namespace", "string")},
    "RoleRef": {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")},
    "AggregationRule": {1: ("clusterRoleSelectors", "LabelSelector[]")},
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "PolicyRule[]")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "PolicyRule[]"), 3: ("aggregationRule", "AggregationRule")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "Subject[]"), 3: ("roleRef", "RoleRef")},
}
_PROTOBUF_KINDS = {
    (f"{AUTHORIZATION}/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    (f"{AUTHORIZATION}/v1", "SubjectAccessReview"): "SubjectAccessReview",
    (f"{AUTHORIZATION}/v1", "LocalSubjectAccessReview"): "SubjectAccessReview",
    (f"{AUTHORIZATION}/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    (f"{AUTHENTICATION}/v1", "SelfSubjectReview"): "SelfSubjectReview",
    (f"{AUTHENTICATION}/v1", "TokenReview"): "TokenReview",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",  # the same fields and numbers
}
protobuf.MESSAGES.update({k: v for k, v in _PROTOBUF_MESSAGES.items() if k not in protobuf.MESSAGES})
protobuf.KINDS.update(_PROTOBUF_KINDS)


def handles(path: str) -> bool:
    return path.startswith(("/apis/authorization.k8s.io", "/apis/authentication.k8s.io"))


def _json(body: Any, status: int = 200) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status)
    response.content_type = "application/json"
    return response


def discovery(path: str) -> web.Response | None:
    parts = [p for p in path.strip("/").split("/") if p]
    group = parts[1]
    if len(parts) == 2:
        gv = {"groupVersion": f"{group}/v1", "version": "v1"}
        return _json({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv})
    if len(parts) == 3 and parts[2] == "v1":
        resources = [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": ["create"]}
            for plural, kind, namespaced in _RESOURCES[group]
        ]
        return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1", "resources": resources})
    return None


def _attributes(spec: dict, namespace_override: str | None = None) -> Attributes:
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return Attributes(
            verb=str(resource.get("verb") or ""),
            resource_request=True,
            group=str(resource.get("group") or ""),
            version=str(resource.get("version") or ""),
            resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            namespace=namespace_override if namespace_override is not None else str(resource.get("namespace") or ""),
            name=str(resource.get("name") or ""),
        )
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(non_resource, dict):
        return Attributes(verb=str(non_resource.get("verb") or ""), resource_request=False,
                          path=str(non_resource.get("path") or ""))
    raise BadRequest("spec must set one of resourceAttributes or nonResourceAttributes")


def user_info(user: Any) -> dict:
    info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
    if getattr(user, "uid", ""):
        info["uid"] = user.uid
    extra = getattr(user, "extra", None)
    if extra:
        info["extra"] = extra
    return info


async def handle(security: Any, request: web.Request, user: Any, body_reader: Any) -> web.StreamResponse:
    """Serve one request under /apis/authorization.k8s.io or /apis/authentication.k8s.io."""
    path = request.path
    if request.method == "GET":
        found = discovery(path)
        if found is None:
            raise NotFound("the server could not find the requested resource")
        return found
    parts = [p for p in path.strip("/").split("/") if p]
    group = parts[1]
    namespace = None
    if len(parts) == 6 and parts[3] == "namespaces":
        namespace, resource = parts[4], parts[5]
    elif len(parts) == 4:
        resource = parts[3]
    else:
        raise NotFound("the server could not find the requested resource")
    kinds = {plural: (kind, namespaced) for plural, kind, namespaced in _RESOURCES.get(group, [])}
    if len(parts) < 3 or parts[2] != "v1" or resource not in kinds or kinds[resource][1] != (namespace is not None):
        raise NotFound("the server could not find the requested resource")
    if request.method != "POST":
        raise MethodNotAllowed(f"the server does not allow this method on the requested resource ({request.method} {resource})")
    body = await body_reader(request)
    if not isinstance(body, dict):
        raise BadRequest("the body of the request must be an object")
    kind = kinds[resource][0]
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise BadRequest("spec must be an object")
    result = {"kind": kind, "apiVersion": f"{group}/v1", "metadata": {"creationTimestamp": None}, "spec": spec}
    rbac = security.rbac
    if resource == "selfsubjectreviews":
        result.pop("spec")
        result["status"] = {"userInfo": user_info(user)}
    elif resource == "tokenreviews":
        token = spec.get("token")
        found = security.user_for_token(token) if isinstance(token, str) else None
        if found is not None and hasattr(found, "pod"):
            if not await security.tokens.still_valid(found):
                found = None
        result["status"] = {"authenticated": True, "user": user_info(found)} if found else {"authenticated": False}
    elif resource == "selfsubjectrulesreviews":
        namespace = str(spec.get("namespace") or "")
        rules = rbac.rules_for(user, namespace)
        result["status"] = {
            "resourceRules": [r.to_dict() for r in rules if not r.non_resource_urls],
            "nonResourceRules": [r.to_dict() for r in rules if r.non_resource_urls],
            "incomplete": False,
        }
    else:
        if resource == "selfsubjectaccessreviews":
            subject = user
        else:
            name = spec.get("user")
            groups = spec.get("groups") or []
            if not isinstance(name, str) and not groups:
                raise BadRequest("spec.user or spec.groups must be set")
            subject = User(str(name or ""), tuple(str(g) for g in groups if isinstance(g, str)))
            if namespace is not None:
                ra = spec.get("resourceAttributes") or {}
                if isinstance(ra, dict) and ra.get("namespace") not in (None, "", namespace):
                    raise BadRequest("spec.resourceAttributes.namespace must match the namespace of the request")
        attrs = _attributes(spec, namespace)
        decision = await security.decide(subject, attrs)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        result["status"] = status
    if namespace is not None:
        result["metadata"]["namespace"] = namespace
    return _json(result, 201)
